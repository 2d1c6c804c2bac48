"""``ai4ec dev``: the whole platform on one machine, from the same model ``build`` compiles.

The room holds the local stand-ins for what Azure runs: a Redis (:mod:`.redis`), the
gateway that answers as API Management would, driven by the APIM plan (:mod:`.gateway`),
the cluster ingress that routes backend paths to each API (:mod:`.ingress`), the demo
backend that plays a Framework container (:mod:`.demo`), container runners
(:mod:`.containers`) and the session that starts and stops them all (:mod:`.session`).
The task manager itself is the real runtime (``functions/ai4ec_runtime``), run in-process.
"""

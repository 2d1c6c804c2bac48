"""ai4ec: compile one declarative platform.yaml into an ML inference platform on Azure.

The pipeline is ``load -> validate -> model -> render -> write``; each stage is one
package (or module) and hands a typed value to the next. See ``ai4ec.pipeline`` and
docs/architecture.md.
"""

__version__ = "0.1.0"

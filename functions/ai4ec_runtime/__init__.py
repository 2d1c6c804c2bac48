"""ai4ec task-manager runtime: the Azure Functions app behind async APIs and pipelines.

The runtime keeps the upstream AI for Earth wire contract (``CacheConnectorUpsert``,
``CacheConnectorGet``, ``BackendWebhook``, ...) and its Redis layout, and fixes its bugs:
every state transition is one atomic Lua script, terminal states are final, finished
tasks expire, pipelines are declarative (``routing.json``) and KEDA reads one
``ai4ec:pending:<apiId>`` sorted set per API.

Module map: :mod:`.settings` (app settings) -> :mod:`.routing` (routing.json) ->
:mod:`.store` (Redis + :mod:`.scripts`) -> :mod:`.dispatch` (Event Grid or local) ->
:mod:`.handlers` (plain request/response functions) -> :mod:`.app` (Functions host) and
:mod:`.localhost` (stdlib HTTP host). :mod:`.bundle` builds the deployable zip.
"""

__version__ = "0.1.0"

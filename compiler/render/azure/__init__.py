"""Azure target: the platform's infrastructure as Bicep modules and an equivalent ARM template.

Writes, below ``out/<env>/``:

* ``azure/main.bicep`` and ``azure/modules/<concern>.bicep`` - readable Bicep for
  ``az deployment group create`` (:mod:`.bicep`);
* ``azure/main.json`` - the same resources as one ARM template (classic ``resources``
  array), which ``ai4ec apply`` deploys with azure-mgmt-resource (:mod:`.arm`);
* ``azure/main.parameters.json`` - the parameters (no secrets: there are none);
* for large platforms only, ``azure/apim-apis-<n>.{bicep,json,parameters.json}`` -
  API Management objects that no longer fit one deployment.

Both formats are printed from one list of resources (:mod:`.template`, built by one
module per concern), whose values and expressions know how to print themselves in each
language (:mod:`.spec`, the shared expression tree - the only module of this room the
APIM target imports). Keys and connection strings are written into Key Vault by
``listKeys()``/``reference()`` expressions at deployment time, so no generated file
holds a secret.

The package's ``__init__`` imports nothing, so the shared expression tree
(:mod:`.spec`) can be imported alone (the Jinja environment's Bicep filters and the
APIM target do); the entry point is :func:`.target.render_azure`.
"""

"""Dispatch: the Event Grid subscription that delivers tasks to BackendWebhook."""

from __future__ import annotations

from ...model.types import Platform
from .access import PARAM_EVENT_GRID_KEY
from .common import (
    DEAD_LETTER_CONTAINER,
    EVENT_SUBSCRIPTION,
    PARAM_EVENT_SUBSCRIPTION,
    AzureSpec,
    new_resource,
)
from .functions import Functions
from .roles import Grants
from .spec import Interp, Note, Param, Parameter, Resource


def dispatch(
    spec: AzureSpec,
    platform: Platform,
    functions: Functions,
    storage_account: Resource,
    grants: Grants,
) -> None:
    """The Event Grid subscription that delivers tasks to the runtime's BackendWebhook."""
    eg = platform.azure.event_grid
    topic, site = functions.topic, functions.site
    url = Interp(("https://", site.ref("defaultHostName"), "/api/BackendWebhook"))
    spec.add(
        new_resource(
            "eventSubscription",
            "Microsoft.EventGrid/topics/eventSubscriptions",
            EVENT_SUBSCRIPTION,
            "dispatch",
            parent=topic,
            condition=Param(PARAM_EVENT_SUBSCRIPTION),
            body={
                "properties": {
                    "destination": {
                        "endpointType": "WebHook",
                        "properties": {
                            "endpointUrl": Note(url, "No key in the URL: see the header."),
                            "maxEventsPerBatch": 1,
                            "preferredBatchSizeInKilobytes": 64,
                            "deliveryAttributeMappings": Note(
                                [
                                    {
                                        "name": "x-functions-key",
                                        "type": "Static",
                                        "properties": {
                                            "value": Param(PARAM_EVENT_GRID_KEY),
                                            "isSecret": True,
                                        },
                                    }
                                ],
                                "Event Grid's own key (it opens the webhook and nothing else),\n"
                                "read from Key Vault by Resource Manager; Azure never returns it.",
                            ),
                        },
                    },
                    "eventDeliverySchema": "EventGridSchema",
                    "retryPolicy": {
                        "maxDeliveryAttempts": eg.max_delivery_attempts,
                        "eventTimeToLiveInMinutes": eg.event_ttl_minutes,
                    },
                    "deadLetterWithResourceIdentity": Note(
                        {
                            "identity": {"type": "SystemAssigned"},
                            "deadLetterDestination": {
                                "endpointType": "StorageBlob",
                                "properties": {
                                    "resourceId": storage_account.id(),
                                    "blobContainerName": DEAD_LETTER_CONTAINER,
                                },
                            },
                        },
                        "Undeliverable events go to storage with the topic's identity (no key).",
                    ),
                }
            },
            depends_on=[grants.topic_dead_letter],
            comment="Event Grid validates a webhook when the subscription is created, so\n"
            "BackendWebhook must already run: deployed only with deployEventSubscription=true.",
        )
    )
    spec.params.append(
        Parameter(
            PARAM_EVENT_SUBSCRIPTION,
            "bool",
            False,
            "Create the Event Grid subscription to BackendWebhook. Event Grid calls the webhook "
            "to validate it, so the Function App package must already run: `ai4ec apply` "
            "deploys with false, publishes the package, then deploys again with true.",
        )
    )

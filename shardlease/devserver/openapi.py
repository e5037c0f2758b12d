"""A minimal OpenAPI v3 index, enough for ``kubectl create/apply/replace -f`` with default validation.

kubectl downloads ``/openapi/v3`` and the group document of the object's GroupVersion. When it finds
an operation tagged with the object's GVK that takes a ``fieldValidation`` parameter, it leaves
validation to the server (sending ``fieldValidation=Strict``) instead of validating client-side; so
that is all these documents need to say. Full schemas are deliberately left out.
"""

from __future__ import annotations

from typing import Any

from .resources import ALL, Resource

_HASH = "shardlease-dev-1"


def _doc_path(resource: Resource) -> str:
    return f"apis/{resource.api_version}" if resource.group else "api/v1"


def index() -> dict[str, Any]:
    return {"paths": {_doc_path(r): {"serverRelativeURL": f"/openapi/v3/{_doc_path(r)}?hash={_HASH}"}
                      for r in ALL}}


def _operation(resource: Resource, action: str) -> dict[str, Any]:
    return {
        "operationId": f"{action}{resource.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": resource.group, "version": resource.version,
                                            "kind": resource.kind},
        "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
                        "description": "fieldValidation instructs the server on how to handle objects "
                                       "in the request containing unknown or duplicate fields."}],
        "responses": {"200": {"description": "OK"}},
    }


def group_document(doc_path: str) -> dict[str, Any] | None:
    for resource in ALL:
        if _doc_path(resource) != doc_path:
            continue
        prefix = f"/{doc_path}/namespaces/{{namespace}}/{resource.plural}"
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (shardlease dev-server)", "version": "v1.32.0"},
            "paths": {
                prefix: {"post": _operation(resource, "post")},
                prefix + "/{name}": {"put": _operation(resource, "put"),
                                     "patch": _operation(resource, "patch")},
            },
            "components": {"schemas": {}},
        }
    return None

"""The OpenAPI 3.1 document served at /openapi.json (written by hand, not generated)."""

from __future__ import annotations

from typing import Any

from mlpipe_cli import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "malformed request or entity key",
        404: "unknown route, or no model registered (/predict)",
        405: "wrong method",
        413: "batch larger than serving.max_batch, or body too large",
        500: "transform or model failed on stored values (JSON, never a traceback)",
        503: "online store unreachable or its live version is incompatible",
    }
    return {str(c): _json(_ERROR, text[c]) for c in codes}


def openapi_document(info: Any, max_batch: int) -> dict[str, Any]:
    """The document; ``info`` is the running service's ServiceInfo (versions, columns)."""
    entity = {
        "description": "an entity key value, or a list of key values in entity_keys order "
        f"({', '.join(info.entity_keys)})",
        "oneOf": [
            {"type": "integer"},
            {"type": "string"},
            {"type": "array", "items": {"type": ["integer", "string"]}},
        ],
    }
    served = {
        "type": "object",
        "required": [
            "entity",
            "cold_start",
            "features",
            "vector",
            "expired",
            "transform_version",
            "store_version",
            "as_of",
        ],
        "properties": {
            "entity": entity,
            "cold_start": {
                "type": "boolean",
                "description": "true when the entity is not in the store and the configured "
                "cold-start defaults were served",
            },
            "features": {
                "type": "object",
                "description": "raw feature values from the online store",
                "additionalProperties": True,
            },
            "vector": {
                "type": "array",
                "items": {"type": ["number", "null"]},
                "description": "transformed vector, in the order of output_columns: "
                + ", ".join(info.output_columns),
            },
            "expired": {
                "type": "array",
                "items": {"type": "string"},
                "description": "features replaced by their default because of their ttl",
            },
            "transform_version": {"type": "string"},
            "store_version": {"type": "string"},
            "as_of": {"type": "string", "format": "date-time"},
            "prediction": {"type": "number", "description": "model score (/predict only)"},
        },
    }
    batch_request = {
        "type": "object",
        "required": ["entities"],
        "additionalProperties": False,
        "properties": {
            "entities": {"type": "array", "items": entity, "minItems": 1, "maxItems": max_batch}
        },
    }
    batch_response = {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "transform_version": {"type": "string"},
            "model_version": {"type": "string"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Served"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"mlpipe feature server ({info.pipeline})",
            "version": __version__,
            "description": f"Serves online features of pipeline {info.pipeline} transformed by "
            f"transform artifact {info.transform_version}.",
        },
        "paths": {
            "/features/{entity_id}": {
                "get": {
                    "summary": "Raw and transformed features of one entity",
                    "parameters": [
                        {
                            "name": "entity_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "the entity key; composite keys joined by ','",
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Served"}, "served"),
                        **_errors(400, 500, 503),
                    },
                }
            },
            "/features": {
                "post": {
                    "summary": f"Features of up to {max_batch} entities",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}
                        },
                    },
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/BatchResponse"}, "served"),
                        **_errors(400, 413, 500, 503),
                    },
                }
            },
            "/predict": {
                "post": {
                    "summary": "Features and the registered model's score",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Batch"},
                                        {
                                            "type": "object",
                                            "required": ["entity"],
                                            "properties": {"entity": entity},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/Served"},
                                    {"$ref": "#/components/schemas/BatchResponse"},
                                ]
                            },
                            "served with prediction",
                        ),
                        **_errors(400, 404, 413, 500, 503),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "responses": {"200": _json({"type": "object"}, "alive")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Artifacts verified and the online store reachable",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Ready"}, "ready"),
                        "503": _json({"$ref": "#/components/schemas/Ready"}, "not ready"),
                    },
                }
            },
            "/info": {
                "get": {
                    "summary": "Versions, entity keys, input and output columns",
                    "responses": {"200": _json({"type": "object"}, "info")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text format 0.0.4)",
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI document")},
                }
            },
        },
        "components": {
            "schemas": {
                "Served": served,
                "Batch": batch_request,
                "BatchResponse": batch_response,
                "Ready": {
                    "type": "object",
                    "properties": {
                        "status": {"enum": ["ready", "not_ready"]},
                        "reason": {"type": "string"},
                        "transform_version": {"type": "string"},
                        "store_version": {"type": ["string", "null"]},
                        "model_version": {"type": ["string", "null"]},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            }
        },
    }

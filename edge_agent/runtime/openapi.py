"""The API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Request bodies come from the same pydantic models that validate them
(:class:`edge_agent.runtime.api.ChatBody`), so the document cannot drift from what
the server accepts; responses are written out here, as OpenAI documents
them plus the ``x_edge_agent`` extension. The test suite fuzzes the live
daemon against this document with schemathesis, which checks both sides.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel

JSON = "application/json"
SSE = "text/event-stream"
_REF = "#/components/schemas/{model}"

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}

_LOGPROBS = {
    "type": ["object", "null"],
    "properties": {"content": {"type": ["array", "null"]}, "refusal": {"type": ["string", "null"]}},
}

_COMPLETION = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "finish_reason": {"enum": ["stop", "length", "tool_calls"]},
                    "logprobs": _LOGPROBS,
                    "message": {
                        "type": "object",
                        "required": ["role"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": ["string", "null"]},
                            "tool_calls": {"type": "array", "items": _TOOL_CALL},
                        },
                    },
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            "properties": {
                k: {"type": "integer", "minimum": 0}
                for k in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        },
        "x_edge_agent": {"type": "object"},
    },
}

# One server-sent event (OpenAPI 3.1: a text/event-stream schema describes
# each event): ``data`` is a chat.completion.chunk, an error object, or [DONE].
_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}

_MODELS = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}


def openapi_document(
    body: type[BaseModel], ignored: Collection[str], models: Sequence[str]
) -> dict[str, Any]:
    """The document for a daemon serving ``models``; ``body`` is the chat
    request's model and ``ignored`` the fields it accepts and ignores."""
    request = body.model_json_schema(ref_template=_REF, mode="validation")
    schemas: dict[str, Any] = request.pop("$defs", {})
    request["properties"]["model"] = {"type": "string", "enum": list(models)}
    request["properties"].update({name: {} for name in sorted(ignored)})
    schemas.update({"ChatRequest": request, "ChatCompletion": _COMPLETION, "Error": _ERROR})
    schemas["ModelList"] = _MODELS
    return {
        "openapi": "3.1.0",
        "info": {"title": "edge-agent", "version": "1", "description": __doc__.split("\n")[0]},
        "paths": {
            "/v1/chat/completions": {"post": _chat_operation()},
            "/v1/models": {"get": _get("listModels", "ModelList")},
            "/healthz": {"get": _health()},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "an error", "content": {JSON: {"schema": _ref("Error")}}}
        for c in codes
    }


def _chat_operation() -> dict[str, Any]:
    answer = {
        "description": "the answer (a JSON completion, or server-sent chunks with stream: true)",
        "content": {
            JSON: {"schema": _ref("ChatCompletion")},
            SSE: {"schema": _EVENT},
        },
    }
    return {
        "operationId": "createChatCompletion",
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("ChatRequest")}}},
        "responses": {"200": answer, **_errors(400, 401, 403, 404, 413, 422, 429, 503)},
    }


def _get(operation: str, schema: str) -> dict[str, Any]:
    ok = {"description": "ok", "content": {JSON: {"schema": _ref(schema)}}}
    return {"operationId": operation, "responses": {"200": ok, **_errors(401)}}


def _health() -> dict[str, Any]:
    status = {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    }
    responses = {
        code: {"description": what, "content": {JSON: {"schema": status}}}
        for code, what in (("200", "serving"), ("503", "draining"))
    }
    return {"operationId": "health", "security": [], "responses": responses}

"""The OpenAPI document as tests see it, and a small validator for the subset of JSON Schema it uses.

Why our own validator: the document uses a dozen keywords (type, required, properties,
additionalProperties, items, enum, const, pattern, min/max, oneOf/allOf, $ref), and a failure
should say *where* in the response the shape differs, which forty lines do well enough.
"""

from __future__ import annotations

import re
from typing import Any

from vm_agent.node.openapi_http import load_document

DOCUMENT = load_document()
METHODS = ("get", "post", "put", "patch", "delete")
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) for every documented operation."""
    found = []
    for path, item in DOCUMENT["paths"].items():
        for method in METHODS:
            if method in item:
                found.append((method.upper(), path, item[method]))
    return found


def requires_auth(operation: dict[str, Any]) -> bool:
    security = operation.get("security", DOCUMENT.get("security", []))
    return bool(security)


def is_websocket(operation: dict[str, Any]) -> bool:
    return "101" in operation.get("responses", {})


def response_schema(method: str, path: str, status: int) -> dict[str, Any]:
    operation = DOCUMENT["paths"][path][method.lower()]
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, which is not documented"
    response = resolve(responses[str(status)])
    content = response.get("content", {})
    assert "application/json" in content, f"{method} {path} {status} has no JSON schema"
    return content["application/json"]["schema"]


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def errors(value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
    """Every way `value` differs from `schema` (empty when it conforms)."""
    schema = resolve(schema)
    problems: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, n) for n in names):
            return [f"{where}: {type(value).__name__} is not {'/'.join(names)}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{where}: shorter than {schema['minLength']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: {value} > {schema['maximum']}")
    if isinstance(value, dict):
        problems += [f"{where}: missing {key!r}" for key in schema.get("required", []) if key not in value]
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems += errors(item, properties[key], f"{where}.{key}")
            elif extra is False:
                problems.append(f"{where}: unexpected {key!r}")
            elif isinstance(extra, dict):
                problems += errors(item, extra, f"{where}.{key}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                problems += errors(item, schema["items"], f"{where}[{i}]")
    for sub in schema.get("allOf", []):
        problems += errors(value, sub, where)
    if "oneOf" in schema:
        matching = [s for s in schema["oneOf"] if not errors(value, s, where)]
        if len(matching) != 1:
            problems.append(f"{where}: matches {len(matching)} of the oneOf alternatives, not exactly one")
    if "anyOf" in schema and not any(not errors(value, s, where) for s in schema["anyOf"]):
        problems.append(f"{where}: matches none of anyOf")
    return problems


def concrete(path: str, **values: str) -> str:
    """A documented path template with its parameters filled in."""
    defaults = {"ws": "host", "sid": "ops-session", "path": "console.js", **values}
    return re.sub(r"\{(\w+)\}", lambda m: defaults[m.group(1)], path)

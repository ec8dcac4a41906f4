"""`GET /openapi.json`: the API description (vm_agent/openapi.yaml), served without auth.

The YAML is parsed once per process, at the first setup, and kept as ready-made JSON bytes: a broken description
fails the daemon's start (and the tests) instead of the first client that asks, and serving it
costs nothing. `info.version` is the running daemon's version, so a client can tell which
contract it is reading.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import yaml
from aiohttp import web

from vm_agent import __version__

_DOCUMENT = web.AppKey("openapi_document", bytes)


def load_document() -> dict[str, Any]:
    """The description as a dict (also used by tests to compare it with the router)."""
    text = resources.files("vm_agent").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(document, dict) or "paths" not in document:
        raise ValueError("vm_agent/openapi.yaml is not an OpenAPI document")
    document.setdefault("info", {})["version"] = __version__
    return document


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_DOCUMENT], content_type="application/json")


@functools.cache
def _document_bytes() -> bytes:
    """Parsed once per process: YAML parsing costs ~0.5 s, too much for every app built."""
    return json.dumps(load_document(), separators=(",", ":")).encode()


def setup(app: web.Application) -> None:
    app[_DOCUMENT] = _document_bytes()
    app.router.add_get("/openapi.json", get_openapi)

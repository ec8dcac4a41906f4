"""Who this VM is right now, which can change while the daemon runs.

A Vers VM can be branched or restored from a snapshot: the process, its sessions and its
environment file come back as they were, but the platform writes a new identity file
(`/root/.swarm/identity.json` by default). The daemon re-reads it on SIGHUP and whenever the
file changes, so tokens for the new node id are accepted and callbacks name the new node —
without dropping a single terminal or agent session.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("vm_agent.identity")
_NODE_ID_KEYS = ("nodeId", "node_id", "vmId", "vm_id", "id")


class Identity:
    """The node id and labels in force; `generation` increases on every change."""

    def __init__(self, configured_node_id: str, path: str | None) -> None:
        self.configured_node_id = configured_node_id
        self.path = Path(path) if path else None
        self.node_id = configured_node_id
        self.labels: dict[str, str] = {}
        self.source = "environment"
        self.generation = 0
        self.loaded_at = time.time()
        self.error: str | None = None
        self._stamp: tuple[int, int] | None = None
        self._reload_requested = asyncio.Event()
        self._changed = asyncio.Event()

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id,
            "labels": self.labels,
            "source": self.source,
            "generation": self.generation,
            "loadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            **({"error": self.error} if self.error else {}),
        }

    def reload(self) -> bool:
        """Read the identity file now; True when something changed. Never raises."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._stamp, self.error = None, None
            return self._apply(self.configured_node_id, {}, "environment")
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return False
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        try:
            document = json.loads(self.path.read_text())
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            self.error = f"{self.path}: {exc}"
            log.warning("identity_unreadable", path=str(self.path), error=str(exc))
            return False
        self.error = None
        node_id = next((str(document[k]) for k in _NODE_ID_KEYS if document.get(k)), self.configured_node_id)
        raw_labels = document.get("labels") if isinstance(document.get("labels"), dict) else {}
        labels = {str(k): str(v) for k, v in raw_labels.items()}
        return self._apply(node_id, labels, str(self.path))

    def _apply(self, node_id: str, labels: dict[str, str], source: str) -> bool:
        if (node_id, labels, source) == (self.node_id, self.labels, self.source):
            return False
        previous = self.node_id
        self.node_id, self.labels, self.source = node_id, labels, source
        self.generation += 1
        self.loaded_at = time.time()
        self._changed.set()
        self._changed = asyncio.Event()
        log.info("identity_changed", node_id=node_id, previous_node_id=previous, labels=labels, source=source)
        return True

    async def wait_for_generation(self, generation: int) -> None:
        """Wait until the identity has changed at least up to `generation`."""
        while self.generation < generation:
            await self._changed.wait()

    def request_reload(self) -> None:
        """Signal-handler safe: wake the watcher (SIGHUP)."""
        self._reload_requested.set()

    def _changed_on_disk(self) -> bool:
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
        except OSError:
            return self._stamp is not None
        return (stat.st_mtime_ns, stat.st_size) != self._stamp

    async def watch(self, poll_interval: float) -> None:
        """Reload on SIGHUP at once, and when the file changes (checked every poll_interval)."""
        while True:
            try:
                async with asyncio.timeout(poll_interval):
                    await self._reload_requested.wait()
            except TimeoutError:
                pass
            forced = self._reload_requested.is_set()
            self._reload_requested.clear()
            if forced or self._changed_on_disk():
                await asyncio.to_thread(self.reload)


def default_identity_file() -> str:
    return os.path.join(os.path.expanduser("~root"), ".swarm", "identity.json")

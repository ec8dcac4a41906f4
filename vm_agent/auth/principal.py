"""Who is calling: the result of authentication that handlers work with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

USER = "user"
MANAGEMENT = "management"
Kind = Literal["user", "management"]


@dataclass(frozen=True)
class Principal:
    user_id: str
    workspace_id: str | None
    node_id: str | None
    kind: Kind
    expires_at: float | None = None

    def may_access_workspace(self, workspace_id: str) -> bool:
        """User tokens are bound to their workspace; a management token without a
        `workspace` claim is node-wide, with one it is bound like a user token."""
        if self.kind == MANAGEMENT and self.workspace_id is None:
            return True
        return self.workspace_id == workspace_id

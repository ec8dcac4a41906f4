"""Validate a JWT against the JWKS and the contract's claims, and say who the caller is.

Pinned to asymmetric algorithms and to the algorithm family of the key that verifies it: a
token's header never chooses how it is checked (defeats `alg: none` and the HS256-with-the-
public-key confusion). Every rejection carries a reason for the log; the client only sees the
error code, so a probe learns nothing about which check failed.
"""

from __future__ import annotations

from typing import Any

import jwt

from vm_agent.auth.jwks import JwksCache, JwksUnavailable
from vm_agent.auth.principal import MANAGEMENT, USER, Principal
from vm_agent.config import Settings
from vm_agent.identity import Identity

MANAGEMENT_AUDIENCE = "node-management"
_FAMILY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
ALLOWED_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"})


_CLAIM_ERRORS: dict[type, str] = {
    jwt.ExpiredSignatureError: "expired",
    jwt.ImmatureSignatureError: "not_yet_valid",
    jwt.InvalidIssuerError: "bad_issuer",
    jwt.InvalidAudienceError: "bad_audience",
    jwt.MissingRequiredClaimError: "missing_claim",
    jwt.InvalidIssuedAtError: "not_yet_valid",
}


class TokenRejected(Exception):
    """The token is not acceptable. `status` 401 (bad token) or 403 (valid token, wrong scope)."""

    def __init__(self, reason: str, status: int = 401, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = code  # short, bounded label for metrics


class AuthUnavailable(Exception):
    """Keys are not loaded yet: the caller should answer 503, not 401."""


class TokenValidator:
    def __init__(self, settings: Settings, jwks: JwksCache, identity: Identity) -> None:
        self._settings = settings
        self._jwks = jwks
        self._identity = identity

    async def validate(self, token: str) -> Principal:
        settings = self._settings
        if len(token) > settings.jwt_max_token_bytes:
            raise TokenRejected("token too large", code="too_large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"malformed token: {exc}", code="malformed") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise TokenRejected(f"algorithm {alg!r} not allowed", code="bad_algorithm")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("kid must be a string")
        try:
            candidates = await self._jwks.keys_for(kid)
        except JwksUnavailable as exc:
            raise AuthUnavailable(str(exc)) from None
        candidates = [k for k in candidates if _key_family(k) == _FAMILY.get(alg[:2])]
        if not candidates:
            raise TokenRejected(f"no key for kid {str(kid)[:64]!r} and algorithm {alg}", code="unknown_key")
        claims = self._decode(token, alg, candidates)
        return self._principal(claims)

    def _decode(self, token: str, alg: str, keys: list[jwt.PyJWK]) -> dict[str, Any]:
        settings = self._settings
        last_error: Exception | None = None
        for key in keys:
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=[settings.jwt_audience, MANAGEMENT_AUDIENCE],
                    issuer=settings.issuer,
                    leeway=settings.jwt_leeway,
                    options={"require": ["exp", "sub", "aud"], "verify_iss": settings.issuer is not None},
                )
            except jwt.InvalidSignatureError as exc:
                last_error = exc
                continue
            except jwt.PyJWTError as exc:
                raise TokenRejected(
                    f"{type(exc).__name__}: {exc}", code=_CLAIM_ERRORS.get(type(exc), "invalid")
                ) from None
        raise TokenRejected(f"signature verification failed: {last_error}", code="bad_signature")

    def _principal(self, claims: dict[str, Any]) -> Principal:
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        kind = MANAGEMENT if MANAGEMENT_AUDIENCE in audiences else USER
        node = claims.get("node")
        workspace = claims.get("workspace")
        if node is not None and node != self._identity.node_id:
            raise TokenRejected(f"token is for node {str(node)[:64]!r}", status=403, code="wrong_node")
        if kind == MANAGEMENT and node is None:
            raise TokenRejected("management token without node claim", code="missing_claim")
        if kind == USER and not workspace:
            raise TokenRejected("user token without workspace claim", code="missing_claim")
        if workspace is not None and not isinstance(workspace, str):
            raise TokenRejected("workspace claim must be a string", code="missing_claim")
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise TokenRejected("sub claim must be a non-empty string", code="missing_claim")
        return Principal(
            user_id=claims["sub"],
            workspace_id=workspace,
            node_id=node,
            kind=kind,
            expires_at=float(claims["exp"]),
        )


def _key_family(key: jwt.PyJWK) -> str:
    return {"RSA": "RSA", "EC": "EC", "OKP": "OKP"}.get(key.key_type, "?")

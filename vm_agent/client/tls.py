"""How the client decides to trust a daemon's certificate.

Three ways, strongest first for a freshly branched VM:
- a pinned SHA-256 fingerprint of the daemon's certificate (self-signed VMs: no CA exists, but
  the fingerprint is known from the VM's first boot and changes only when the key does);
- a CA file (a private CA that signed the VMs' certificates), or the system trust store;
- `insecure`: no verification at all, only when asked for, and said loudly every time, because
  a token sent over an unverified connection can be stolen by anyone on the path.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import ssl
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from vm_agent.client.errors import ConfigError, ConnectionFailed

INSECURE_WARNING = (
    "WARNING: TLS verification is disabled (--insecure): the token and everything sent can be "
    "read or changed by anyone on the network path. Pin the certificate with --fingerprint instead."
)

_HEX = re.compile(r"[0-9a-f]{64}")


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits, accepting `AB:CD:...`, spaces and `sha256:`."""
    cleaned = text.strip().lower()
    if cleaned.startswith("sha256:") or cleaned.startswith("sha256="):
        cleaned = cleaned[7:]
    cleaned = cleaned.replace(":", "").replace(" ", "")
    if not _HEX.fullmatch(cleaned):
        raise ConfigError(f"not a SHA-256 certificate fingerprint (need 64 hex digits): {text.strip()!r}")
    return cleaned


def format_fingerprint(hex_digest: str) -> str:
    """`AB:CD:...` as `openssl x509 -fingerprint -sha256` prints it, so users can compare by eye."""
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


@dataclass(frozen=True)
class TlsConfig:
    """Which certificate to trust. The default trusts the system's CA store."""

    ca_file: str | None = None
    fingerprint: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        chosen = [bool(self.ca_file), bool(self.fingerprint), self.insecure]
        if sum(chosen) > 1:
            raise ConfigError("choose one of a CA file, a pinned fingerprint, or insecure")
        if self.fingerprint:
            object.__setattr__(self, "fingerprint", normalize_fingerprint(self.fingerprint))

    def ssl_param(self) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
        """What aiohttp takes as `ssl=`: a context, a fingerprint check, or False (insecure)."""
        if self.insecure:
            print(INSECURE_WARNING, file=sys.stderr)
            return False
        if self.fingerprint:
            # aiohttp skips chain and hostname checks and compares the leaf certificate's digest.
            return aiohttp.Fingerprint(bytes.fromhex(self.fingerprint))
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot read CA file {self.ca_file}: {exc}") from None


async def fetch_fingerprint(url: str, timeout_s: float = 10.0) -> str:
    """The SHA-256 fingerprint of the certificate the daemon at `url` presents, unverified.

    This is the trust-on-first-use step: show it to the user (or compare it with what the VM
    printed at boot) and pin it, rather than running with `--insecure`.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "wss") or not parts.hostname:
        raise ConfigError(f"not an https URL: {url!r}")
    port = parts.port or 443
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
    except (OSError, TimeoutError) as exc:
        raise ConnectionFailed(f"cannot connect to {parts.hostname}:{port}: {exc or 'timed out'}") from None
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return hashlib.sha256(der).hexdigest()

"""One aiohttp session per daemon, and the single place where aiohttp's exceptions become ours.

Everything above this module speaks in paths and JSON objects and catches only
`vm_agent.client.errors`; a wrong URL, a refused port or a foreign certificate is turned into
one sentence here, so neither the library's users nor the CLI ever see an aiohttp traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
from yarl import URL

from vm_agent.client.errors import (
    ClientError,
    ConfigError,
    ConnectionFailed,
    ProtocolError,
    RequestTimeout,
    TlsError,
    api_error,
)
from vm_agent.client.tls import TlsConfig, format_fingerprint

# A WebSocket frame from the daemon (terminal scrollback, a large agent message) can be big.
WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def parse_base_url(text: str) -> URL:
    """The daemon's base URL, checked once so later errors are about the network, not typos."""
    text = (text or "").strip()
    if not text:
        raise ConfigError("no daemon URL given (set VMAGENT_URL or pass --url)")
    if "://" not in text:
        text = "https://" + text
    try:
        url = URL(text)
    except ValueError as exc:
        raise ConfigError(f"not a valid URL: {text!r} ({exc})") from None
    if url.scheme not in ("https", "http") or not url.host:
        raise ConfigError(f"not an https URL: {text!r}")
    return url.with_path(url.path.rstrip("/")).with_query(None).with_fragment(None)


def _reason(error: OSError) -> str:
    """`connection refused` rather than asyncio's "Connect call failed ('10.0.0.5', 8443)"."""
    if error.errno:
        return os.strerror(error.errno).lower()
    return error.strerror or str(error) or type(error).__name__


@contextmanager
def translated_errors(where: str) -> Iterator[None]:
    """Turn aiohttp/OS failures into the client's exceptions with a one-line message."""
    try:
        yield
    except ClientError:
        raise
    except aiohttp.ServerFingerprintMismatch as exc:
        raise TlsError(
            f"TLS certificate of {where} does not match the pinned fingerprint: expected "
            f"{format_fingerprint(exc.expected.hex())}, got {format_fingerprint(exc.got.hex())}"
        ) from None
    except aiohttp.ClientConnectorCertificateError as exc:
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        raise TlsError(
            f"TLS certificate of {where} is not trusted ({reason}); pass --ca-file, or pin it with "
            f"--fingerprint (see `vmagent fingerprint`)"
        ) from None
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise TlsError(f"TLS handshake with {where} failed: {exc}") from None
    except aiohttp.ClientConnectorDNSError:
        raise ConnectionFailed(f"cannot resolve the host of {where}") from None
    except aiohttp.ClientConnectorError as exc:
        raise ConnectionFailed(f"cannot connect to {where}: {_reason(exc.os_error)}") from None
    except aiohttp.InvalidURL as exc:
        raise ConfigError(f"not a valid URL: {exc}") from None
    except aiohttp.WSServerHandshakeError as exc:
        raise api_error(exc.status, None, exc.message) from None
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise ConnectionFailed(f"connection to {where} was lost: {exc or type(exc).__name__}") from None
    except aiohttp.ClientError as exc:
        raise ConnectionFailed(f"request to {where} failed: {exc or type(exc).__name__}") from None
    except TimeoutError:
        raise RequestTimeout(f"{where} did not answer in time") from None


class Transport:
    """HTTP and WebSocket access to one daemon with one token and one trust decision."""

    def __init__(self, base_url: str, token: str, tls: TlsConfig, timeout: float = 30.0) -> None:
        self.base_url = parse_base_url(base_url)
        if not token:
            raise ConfigError("no token given (set VMAGENT_TOKEN or pass --token/--token-file)")
        self._token = token
        self._ssl = tls.ssl_param() if self.base_url.scheme == "https" else False
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def where(self) -> str:
        return str(self.base_url)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout),
            )
        return self._session

    def url(self, path: str) -> URL:
        return URL(str(self.base_url) + path)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request and return its JSON answer; an error status raises its typed error."""
        all_headers = {"Accept": "application/json", **(headers or {})}
        if auth:
            all_headers["Authorization"] = f"Bearer {self._token}"
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        with translated_errors(self.where):
            async with asyncio.timeout(self.timeout):
                async with self._http().request(
                    method, self.url(path), json=body, params=clean, headers=all_headers
                ) as resp:
                    raw = await resp.read()
                    status, reason = resp.status, resp.reason or ""
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = None
        if status >= 400:
            raise api_error(status, data, reason)
        if data is None:
            raise ProtocolError(f"{self.where}{path} answered HTTP {status} with a body that is not JSON")
        return data

    @asynccontextmanager
    async def stream(
        self, path: str, *, params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long-lived GET (Server-Sent Events): no total timeout, errors typed like `request`."""
        all_headers = {"Authorization": f"Bearer {self._token}", **(headers or {})}
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        with translated_errors(self.where):
            async with asyncio.timeout(self.timeout):
                resp = await self._http().get(self.url(path), params=clean, headers=all_headers)
        try:
            if resp.status >= 400:
                with translated_errors(self.where):
                    raw = await resp.read()
                try:
                    data = json.loads(raw)
                except ValueError:
                    data = None
                raise api_error(resp.status, data, resp.reason or "")
            yield resp
        finally:
            resp.release()

    async def websocket(self, path: str, params: Mapping[str, Any] | None = None) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket; the token goes in `?token=` because the contract reads no headers there."""
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        query["token"] = self._token
        with translated_errors(self.where):
            async with asyncio.timeout(self.timeout):
                return await self._http().ws_connect(
                    self.url(path).with_scheme("wss" if self.base_url.scheme == "https" else "ws"),
                    params=query,
                    max_msg_size=WS_MAX_MESSAGE_BYTES,
                    heartbeat=30.0,
                )

"""Text the gateway passes on: secrets redacted, lone UTF-16 surrogates replaced.

Agents print their configuration and provider errors to stderr, often with a key in them; a
crash report goes to every viewer of the session, so anything that looks like a credential is
masked, and so is every value the agent was given as secret environment.

JSON may carry a lone surrogate as an escape (`"\\ud83d"`): a client's string, or an agent that
cut an emoji in half (pi truncates tool output by UTF-16 units). `json.loads` accepts it, but
such a `str` cannot be encoded as UTF-8, so the history, the store and every viewer's frame
would fail on it. `scrub_surrogates` replaces each with U+FFFD where text enters the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "[REDACTED]"
_PATTERNS = (
    re.compile(r"(?i)\b([A-Z0-9_]*(?:KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)[A-Z0-9_]*)(\s*[=:]\s*)(\"?)[^\s\"',;]+"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{16,}|xox[abpr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{20,})"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for value in secrets:
        if value and len(value) >= 4:
            text = text.replace(value, MASK)
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {MASK}", text)
    for pattern in _PATTERNS[2:]:
        text = pattern.sub(MASK, text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def has_surrogate_escape(line: bytes) -> bool:
    """Whether a JSON line may decode to a surrogate (cheap: run it before parsing a hot stream).

    Paired escapes (a whole emoji) match too; `json.loads` joins those, and scrubbing leaves them."""
    return _SURROGATE_ESCAPE.search(line) is not None


def scrub_surrogates(value: Any) -> Any:
    """`value` (str, or JSON made of dicts and lists) with every lone surrogate replaced by U+FFFD.

    Returns `value` itself when there is nothing to replace. Raises RecursionError for nesting
    deeper than the interpreter allows (the JSON parser refuses such input first)."""
    if isinstance(value, str):
        if _SURROGATE.search(value) is None:
            return value
        # UTF-16 joins a high/low pair that sits in two code points, and `replace` turns each
        # lone one into U+FFFD.
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_surrogates(v) for v in value]
    return value

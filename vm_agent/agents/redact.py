"""Secret redaction for text that leaves the daemon (agent stderr in crash reports, logs).

Agents print their configuration and provider errors to stderr, often with a key in them; a
crash report goes to every viewer of the session, so anything that looks like a credential is
masked, and so is every value the agent was given as secret environment.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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

"""Parsers for the value formats settings accept: durations, byte sizes, booleans."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """`250ms`, `15s`, `2m`, `1h`, `1h30m`, or a bare number of seconds → seconds."""
    value = text.strip().lower()
    if not value:
        raise ValueError("empty duration")
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value):
            raise ValueError(f"{text!r} is not a duration (use e.g. 250ms, 15s, 2m, 1h)") from None
    if not math.isfinite(seconds):
        # float() reads "inf" and "nan"; a NaN compares false with everything, so it would slip
        # past every later bound (JWT_LEEWAY=nan accepted tokens that expired a year ago).
        raise ValueError(f"{text!r} is not a finite duration")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_float(text: str) -> float:
    """A finite decimal number (`0.5`, `100`); `inf` and `nan`, which float() accepts, are not."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_size(text: str) -> int:
    """`65536`, `64KiB`, `1MiB`, `2g`, `512k` → bytes (all units binary, as Docker reads them)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (use e.g. 65536, 64KiB, 1MiB, 2g)")
    number, unit = float(match.group(1)), (match.group(2) or "").lower()
    letter = unit[:1] if unit not in ("", "b") else ""
    factor = 1024 ** ("kmgt".index(letter) + 1) if letter else 1
    if not math.isfinite(number * factor):  # 400 digits parse as inf, and int(inf) is no ValueError
        raise ValueError(f"{text!r} is too large a size")
    return int(number * factor)


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds % 3600 == 0 and seconds:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0 and seconds:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"

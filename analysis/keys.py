"""The manifest's row keys: ``name=value`` pairs joined by commas (``depth=50,scale=600``, ``method=FL``)."""

from __future__ import annotations


def parse_key(key: str) -> dict[str, str]:
    """``"depth=50,scale=600"`` -> ``{"depth": "50", "scale": "600"}``; raises ValueError on a malformed key."""
    out = {}
    for part in key.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"malformed row key {key!r}: expected name=value pairs joined by commas")
        out[name.strip()] = value.strip()
    return out


def format_number(x: float) -> str:
    """The key format for numbers: Python float repr, integers without ``.0`` (2.0 -> "2", 0.25 -> "0.25")."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)

"""Atomic writes: an output appears complete or not at all (temporary file in the same folder, then os.replace)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary name keeps the suffix so that writers choosing a format by extension (matplotlib) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_figure(fig, paths: list[str | Path]) -> None:
    """Save a matplotlib Figure to each path (format from the extension: .png, .pdf), atomically."""
    for p in paths:
        suffix = Path(p).suffix.lower().lstrip(".")
        if suffix not in ("png", "pdf", "svg"):
            raise ValueError(f"{p}: figure outputs must end in .png, .pdf or .svg")
        write_atomic(p, lambda tmp, fmt=suffix: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))

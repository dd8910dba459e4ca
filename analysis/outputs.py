"""Figure outputs: a matplotlib Figure saved atomically to each requested file (:mod:`retinanet.atomic`)."""

from __future__ import annotations

from pathlib import Path

from retinanet.atomic import atomic_path

FIGURE_FORMATS = ("png", "pdf", "svg")


def save_figure(fig, paths: list[str | Path]) -> None:
    """Save a matplotlib Figure to each path (format from the extension: .png, .pdf, .svg), atomically."""
    for p in paths:
        suffix = Path(p).suffix.lower().lstrip(".")
        if suffix not in FIGURE_FORMATS:
            raise ValueError(f"{p}: figure outputs must end in {' or '.join('.' + f for f in FIGURE_FORMATS)}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=suffix, dpi=150, bbox_inches="tight")

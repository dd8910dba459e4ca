"""Figure creation for the analysis scripts: matplotlib's object API (no pyplot state, no GUI backend)."""

from __future__ import annotations

from matplotlib.figure import Figure

PAPER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
EFFECTIVE, INEFFECTIVE = "#1f77b4", "#d62728"
"""Figure 7: blue for effective settings, red for the others (the paper's colour code)."""


def new_figure(ncols: int = 1, width: float = 4.5, height: float = 3.5) -> tuple[Figure, list]:
    """A Figure with ``ncols`` side-by-side axes (list), sized ``width`` x ``height`` inches per panel."""
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (for ``IPython.display.Image`` in the notebooks)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()

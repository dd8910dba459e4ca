"""Figure 5: CE, FL (gamma 2) and FL* (gamma 2 beta 1; gamma 4 beta 0) against x_t = y x (eq. 6).

CLI: ``python -m analysis.fig5 --out fig5.png fig5.pdf``
"""

from __future__ import annotations

import sys

import torch
from matplotlib.figure import Figure

from analysis.analytic import FIG5_SPECS, loss_vs_xt
from analysis.plotting import PAPER_COLORS, new_figure

X_RANGE = (-5.0, 5.0)


def make_figure() -> Figure:
    x_t = torch.linspace(*X_RANGE, 2001, dtype=torch.float64)
    fig, (ax,) = new_figure(width=5.0, height=3.8)
    for spec, color in zip(FIG5_SPECS, PAPER_COLORS):
        ax.plot(x_t.numpy(), loss_vs_xt(spec, x_t).numpy(), color=color, label=spec.label)
    ax.set(xlim=X_RANGE, ylim=(0, 5), xlabel="$x_t$", ylabel="loss",
           title="Figure 5: focal loss variants vs. CE")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import analytic_figure_main

    return analytic_figure_main(make_figure, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Figure 1: CE and FL (eq. 4) against p_t for gamma in {0, .5, 1, 2, 5}.

CLI: ``python -m analysis.fig1 --out fig1.png fig1.pdf``
"""

from __future__ import annotations

import sys

import torch
from matplotlib.figure import Figure

from analysis.analytic import FIG1_GAMMAS, loss_vs_pt
from analysis.plotting import PAPER_COLORS, new_figure


def make_figure() -> Figure:
    p_t = torch.linspace(1e-4, 1 - 1e-6, 2001, dtype=torch.float64)
    fig, (ax,) = new_figure(width=5.0, height=3.8)
    for gamma, color in zip(FIG1_GAMMAS, PAPER_COLORS):
        label = f"γ = {gamma:g}" + (" (CE)" if gamma == 0 else "")
        ax.plot(p_t.numpy(), loss_vs_pt(gamma, p_t).numpy(), color=color, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 5), xlabel="probability of ground truth class $p_t$", ylabel="loss",
           title="Figure 1: CE and FL = $-(1-p_t)^γ \\log p_t$")
    ax.axvspan(0.6, 1.0, color="grey", alpha=0.08)
    ax.text(0.8, 4.0, "well-classified\nexamples", ha="center", fontsize=8)
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import analytic_figure_main

    return analytic_figure_main(make_figure, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

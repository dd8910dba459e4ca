"""Figure 6: derivatives of Figure 5's losses with respect to x, by autograd through ``retinanet.modeling.losses``.

Before drawing, the autograd derivatives are checked against Appendix B (eq. 9-11) at both labels over
x in [-20, 20]; a disagreement stops the script with an error (exit code 1, no figure written).

CLI: ``python -m analysis.fig6 --out fig6.png fig6.pdf``
"""

from __future__ import annotations

import sys

import torch
from matplotlib.figure import Figure

from analysis.analytic import FIG5_SPECS, check_derivatives, derivative_vs_xt
from analysis.fig5 import X_RANGE
from analysis.plotting import PAPER_COLORS, new_figure

CHECK_RANGE = (-20.0, 20.0)


def make_figure() -> Figure:
    check_derivatives(FIG5_SPECS, torch.linspace(*CHECK_RANGE, 4001, dtype=torch.float64))
    x_t = torch.linspace(*X_RANGE, 2001, dtype=torch.float64)
    fig, (ax,) = new_figure(width=5.0, height=3.8)
    for spec, color in zip(FIG5_SPECS, PAPER_COLORS):
        ax.plot(x_t.numpy(), derivative_vs_xt(spec, x_t).numpy(), color=color, label=spec.label)
    ax.set(xlim=X_RANGE, ylim=(-1.25, 0.25), xlabel="$x_t$", ylabel="$dL/dx$ (y = +1)",
           title="Figure 6: derivatives (autograd, checked against eq. 9-11)")
    ax.legend()
    return fig


def main(argv: list[str] | None = None) -> int:
    from analysis.cli import analytic_figure_main

    return analytic_figure_main(make_figure, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())

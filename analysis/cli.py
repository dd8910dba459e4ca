"""Shared CLI behaviour of the analysis scripts: bad input -> one line ``error: ...`` on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from matplotlib.figure import Figure

from analysis.errors import AnalysisInputError


def run_cli(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], None],
            argv: list[str] | None = None) -> int:
    """Parse ``argv`` and call ``run(args)``; AnalysisInputError and ValueError become ``error: ...``, exit 2."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except (AnalysisInputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def analytic_figure_main(make_figure: Callable[[], Figure], description: str, argv: list[str] | None = None) -> int:
    """``--out a.png a.pdf`` for a figure drawn from the loss formulas alone (Figs. 1, 5, 6): no run outputs."""
    from analysis.outputs import save_figure

    parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
    parser.add_argument("--out", nargs="+", required=True, help="output files (.png, .pdf)")
    return run_cli(parser, lambda args: save_figure(make_figure(), args.out), argv)

"""Shared CLI behaviour of the analysis scripts: bad input -> one line ``error: ...`` on stderr, exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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

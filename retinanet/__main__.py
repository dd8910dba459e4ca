"""Command-line entry points: ``python -m retinanet <command> --help``.

Each command lives in its module, which exposes ``add_command(subparsers)``: it adds its parser and sets
``func(args) -> exit code``. To add a command, append its module to ``COMMANDS`` (one line).

Errors in the input (``ValueError`` subclasses: ConfigError, DataError, CheckpointError, ...) print one line
``error: <file>: <field>: <problem>`` on stderr and exit with code 2; set ``RETINANET_TRACEBACK=1`` to see the
traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from retinanet.engine import allocator

COMMANDS = (
    "retinanet.engine.train",
    "retinanet.engine.evaluate",
    "retinanet.engine.timing",
    "retinanet.engine.loss_samples",
    "retinanet.data.coco_layout",
    "retinanet.synthetic.generator",
    "retinanet.tools.anchor_stats",
    "retinanet.tools.pretrain",
    "retinanet.tools.plan",
    "retinanet.tools.caffe2_weights",
    # registration point: append a module that defines add_command(subparsers)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m retinanet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_command(subparsers)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of ``exc``; for an error re-raised from a DataLoader worker, the original one-line message."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split("\n"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    allocator.keep_freed_memory()
    try:
        return args.func(args)
    except ValueError as exc:
        if os.environ.get("RETINANET_TRACEBACK"):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

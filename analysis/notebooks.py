"""Execute the analysis notebooks against a study with nbclient, so that the committed notebooks carry outputs that
match the committed results.

CLI::

    python -m analysis.notebooks [--study results/<scale>/study/study.json] --out-dir DIR [--record FILE]
        [NOTEBOOK ...]        default: analysis/explore.ipynb analysis/training_curves.ipynb

Each notebook runs top to bottom in a fresh ``python3`` kernel whose working directory is the repository root, with
``FOCAL_STUDY`` set to ``--study`` (without it, the notebooks' default: analysis/notebook_study.py; no other
``FOCAL_*`` variable passes), and is written to ``DIR/<its name>``:
the DAG's ``notebooks`` rule gives the notebooks' own folder at the default scale (the committed notebooks are
rewritten in place) and ``results/<scale>/notebooks`` at the others. Writes are atomic and come after every
notebook ran: a cell that raises stops with an error naming the notebook and the cell, and nothing is written.
``--record`` writes what ran (JSON: the study, and per notebook its output file, cells, tables and figures).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = (ROOT / "analysis" / "explore.ipynb", ROOT / "analysis" / "training_curves.ipynb")
CELL_TIMEOUT_S = 600
"""Per cell; the longest (explore's tables and claims) takes seconds at mini scale."""
ENV_PREFIX = "FOCAL_"


class NotebookError(RuntimeError):
    """A notebook cell raised; the message names the notebook, the cell and the error."""


def kernel_env(study: Path | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: ours without any ``FOCAL_*`` variable, plus ``FOCAL_STUDY`` = ``study`` if given."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if not k.startswith(ENV_PREFIX)}
    return env if study is None else {**env, "FOCAL_STUDY": str(_study_arg(study))}


def _study_arg(study: Path) -> Path:
    """``study`` relative to the repository root where it lies inside it (the outputs then name no machine's
    folders), else absolute."""
    study = study.resolve()
    return study.relative_to(ROOT) if study.is_relative_to(ROOT) else study


def output_counts(nb) -> dict[str, int]:
    """Cells, figures (``image/png`` outputs) and tables (HTML tables, Markdown tables) among a notebook's outputs."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    data = [o.get("data", {}) for o in outputs]
    return {"cells": len(nb.cells), "figures": sum("image/png" in d for d in data),
            "tables": sum("<table" in str(d.get("text/html", "")) or "\n|---" in str(d.get("text/markdown", ""))
                          for d in data)}


def execute(notebook: Path, study: Path | None, timeout: int = CELL_TIMEOUT_S):
    """The notebook (nbformat) executed against ``study`` (None: the notebooks' default); :class:`NotebookError` if
    a cell raises."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(ROOT)}})
    try:
        client.execute(env=kernel_env(study))
    except CellExecutionError as exc:
        cell = next((i for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o.output_type == "error"),
                    "?")
        against = study or "the default study"
        raise NotebookError(f"{notebook}: cell {cell} failed against {against}: {exc.ename}: {exc.evalue}") from None
    return nb


def execute_all(notebooks: list[Path], study: Path | None, out_dir: Path, record: Path | None = None) -> dict:
    """Execute every notebook, then write each to ``out_dir`` (and the record); returns the record."""
    import nbformat

    from retinanet.atomic import write_json, write_text

    executed = [(nb, execute(nb, study)) for nb in notebooks]
    entries = []
    for source, nb in executed:
        out = out_dir / source.name
        text = nbformat.writes(nb)
        write_text(out, text if text.endswith("\n") else text + "\n")
        entries.append({"notebook": str(source), "written": str(out), **output_counts(nb)})
    result = {"study": None if study is None else str(study), "notebooks": entries}
    if record is not None:
        write_json(record, result)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=None,
                        help="the manifest the notebooks open (default: theirs, results/mini/study/study.json)")
    parser.add_argument("--out-dir", required=True, type=Path, help="where the executed notebooks are written")
    parser.add_argument("--record", type=Path, default=None, help="JSON record of what ran")
    parser.add_argument("notebooks", nargs="*", type=Path, default=list(NOTEBOOKS))
    args = parser.parse_args(argv)
    try:
        result = execute_all(args.notebooks, args.study, args.out_dir, args.record)
    except NotebookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for e in result["notebooks"]:
        print(f"{e['written']}: {e['tables']} tables, {e['figures']} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which study the notebooks open: the committed export of the default scale (``results/mini/study``), or the
manifest that ``FOCAL_STUDY`` names (either layout: a DAG's ``work/<scale>/study.json`` or an export's).

The default scale is config/config.yaml's, its results folder config/<scale>.yaml's ``results``: the notebooks
read what ``snakemake --cores all`` commits, with no training and no work folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from analysis.errors import AnalysisInputError
from analysis.export import MANIFEST, export_dir
from analysis.study_io import Study, load_study

STUDY_ENV = "FOCAL_STUDY"
"""A manifest to open instead of the default (a path, relative to the repository root)."""
RESULTS_ENV = "FOCAL_RESULTS"
"""The results folder whose figures the notebooks show (default: :func:`results_folder`)."""


def default_results(root: Path = Path(".")) -> Path:
    """The default scale's results folder, relative to ``root`` (the repository): ``results/mini``."""
    import yaml

    from workflow.scale import load_scale

    config = yaml.safe_load((root / "config" / "config.yaml").read_text(encoding="utf-8"))
    return Path(load_scale(config, root / "config")["results"])


def default_manifest(root: Path = Path(".")) -> Path:
    """The exported manifest of the default scale under ``root``: ``results/mini/study/study.json``."""
    return root / export_dir(default_results(root)) / MANIFEST


def results_folder(study: Study) -> Path:
    """Where a study's tables and figures are: an export's parent folder, else ``results/<scale>``."""
    return study.path.parent.parent if study.exported else Path("results") / study.scale


def open_study(environ: Mapping[str, str] = os.environ, root: Path = Path(".")) -> tuple[Study, Path]:
    """The notebooks' study and results folder: ``FOCAL_STUDY`` (and ``FOCAL_RESULTS``) where set, else the
    default export under ``root``. Without ``FOCAL_STUDY`` a missing export raises AnalysisInputError saying how to
    get one."""
    named = environ.get(STUDY_ENV)
    path = Path(named) if named else default_manifest(root)
    if not named and not path.is_file():
        raise AnalysisInputError(
            f"{path}: no exported study yet: the study DAG writes it (`bash run.sh study`) and it is committed "
            f"with the results. To open another study set {STUDY_ENV}, e.g. {STUDY_ENV}=results/smoke/study/"
            f"study.json after `bash run.sh study --configfile config/smoke.yaml` (minutes).")
    study = load_study(path)
    return study, Path(environ[RESULTS_ENV]) if environ.get(RESULTS_ENV) else results_folder(study)

"""The study: every table and figure of "Focal Loss for Dense Object Detection" as a target (docs/study.md).

    snakemake --cores all                                   # mini scale, this machine
    snakemake --cores 2 --configfile config/smoke.yaml      # smoke scale (seconds per job)
    snakemake --profile slurm --configfile config/paper.yaml   # paper scale on a SLURM GPU cluster
"""

import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, workflow.basedir)
from retinanet import atomic  # noqa: E402
from workflow.regime import build_regime  # noqa: E402
from workflow.scale import check_config, load_scale  # noqa: E402
from workflow.schedule import build_schedule  # noqa: E402
from workflow.rows import ANALYTIC_FIGURES, FIGURES, TABLES  # noqa: E402
from workflow.study import build_study, paths, weights_path  # noqa: E402


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


config.update(load_scale(config, Path(workflow.basedir) / "config"))


check_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")

STUDY = build_study(config)
REGIME = build_regime(config)  # this study's addition (issue 18): `snakemake regime`, not part of `all`
SCHEDULE = build_schedule(config, STUDY)  # issue 18's check: `snakemake schedule`, not part of `all`
P = paths(config)

# Jobs run `python -m retinanet|analysis.*|workflow.scripts.*` from this checkout, wherever the working directory is.
shell.prefix(f'set -euo pipefail; export PYTHONPATH="{workflow.basedir}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; ')


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/common_imbalance.smk"
include: "workflow/rules/imbalance.smk"
include: "workflow/rules/regime.smk"
include: "workflow/rules/common_schedule.smk"
include: "workflow/rules/schedule.smk"
include: "workflow/rules/common_export.smk"
include: "workflow/rules/analysis.smk"


rule all:
    """Every table and figure of the chosen scale, the manifest, the report, the export of the study's data and the
    notebooks executed against it."""
    input:
        all_targets(),
    default_target: True

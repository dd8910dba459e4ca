# Input and param functions of imbalance.smk (the anchor statistics of the report's imbalance section).

from retinanet.config import DataConfig
from workflow.study import run_id

COCO_TRAIN_ANNOTATIONS = str(Path(DataConfig().root) / DataConfig().train_annotations)
"""COCO's training annotations where the paper scale keeps them (RunConfig's defaults, relative to the working
directory). At the other scales COCO's rate is measured from them when the file is there, else the report cites the
published rate (retinanet.tools.anchor_stats.COCO_PUBLISHED)."""


def anchor_stats_path(rid):
    return f"{W}/anchor-stats/{rid}.json"


def default_run():
    """The run whose data and anchors the report's imbalance section measures: Table 3's FL row (the default FL run,
    gamma 2, alpha .25) at its first seed."""
    entry = next(e for e in STUDY.manifest["tables"]["3"] if e["key"] == "loss=FL,gamma=2")
    return run_id(entry["run"], entry["seeds"][0])


def coco_anchor_stats():
    """anchor-stats of COCO's annotations, or None: at paper scale the scale's own (its data is COCO); elsewhere
    measured with the paper's settings when COCO's training annotations are present; else none."""
    if config["dataset"]["source"] == "coco":
        return anchor_stats_path(default_run())
    if os.path.isfile(COCO_TRAIN_ANNOTATIONS):
        return f"{W}/anchor-stats/coco/train2017.json"
    return None


def imbalance_inputs():
    """The report's imbalance inputs: the scale's anchor statistics and, where measured, COCO's."""
    inputs = {"anchor_stats": anchor_stats_path(default_run())}
    coco = coco_anchor_stats()
    if coco is not None:
        inputs["coco_anchor_stats"] = coco
    return inputs


def coco_stats_option(wildcards, input):
    """``--coco-anchor-stats FILE`` where COCO's rate is measured; nothing where the report cites it."""
    return f"--coco-anchor-stats {input.coco_anchor_stats}" if "coco_anchor_stats" in input.keys() else ""


def anchor_stats_inputs(wildcards):
    """A run's config file and its dataset."""
    return {"config": P["run_config"].format(rid=wildcards.rid), "data": run_data(wildcards.rid)}


def run_train_annotations(wildcards, output):
    """The training annotation file of the run (its resolved config's data root and path): anchor-stats reads it
    and nothing else of the dataset. Derived from ``output`` so that Snakemake does not track it (as the train
    rule's operational options and check_coco's paths): a moved dataset reran anchor_stats and, through it, the
    report (found by the paper rehearsal, tests/test_rehearsal.py)."""
    from retinanet.tools.anchor_stats import split_annotations  # imports torch: only where an anchor_stats job is built

    return str(split_annotations(run_of(wildcards.rid), train_split=True))


def anchor_stats_args(wildcards):
    """`retinanet anchor-stats` options from the scale config (``anchor_stats``, e.g. {images: 5000})."""
    return _options(config.get("anchor_stats"))


# ----- the regime experiment (regime.smk; workflow/regime.py builds REGIME in the Snakefile) ------------------------

from workflow.regime import dataset_options, regime_paths, snapshot_targets

RP = regime_paths(config)


wildcard_constraints:
    tag=r"pr[0-9]e[-+][0-9]+",
    iteration=r"\d+",


def require_regime():
    """The experiment's runs; a one-line error when the scale config has no ``regime`` section."""
    if not REGIME.runs:
        raise ValueError(f"config {config['scale']}: no 'regime' section, so there is no regime experiment to run "
                         "(config/mini.yaml and config/smoke.yaml have one)")
    return REGIME


def regime_dataset_options(wildcards):
    """make-dataset options of one rate's dataset variant (``regime.datasets[].args``)."""
    return dataset_options(REGIME.variant(wildcards.tag).args)


def regime_manifest_content(wildcards):
    return require_regime().manifest


def regime_inputs(wildcards):
    """What the regime table, figures and section read through regime.json: every run's metrics, the curves'
    snapshot metrics, each rate's anchor statistics, and COCO's where measured."""
    regime = require_regime()
    inputs = {"regime": RP["manifest"], "runs": [P["metrics"].format(rid=rid) for rid in sorted(regime.runs)],
              "snapshots": snapshot_targets(regime),
              "anchor_stats": [rate["anchor_stats"] for rate in regime.manifest["rates"]]}
    coco = coco_anchor_stats()
    if coco is not None:
        inputs["coco_anchor_stats"] = coco
    return inputs


def regime_outputs():
    """The experiment's results: table, figures and report section."""
    return [f"{RP['table']}.{ext}" for ext in ("csv", "md")] + \
        [f"{RP[name]}.{ext}" for name in ("figure", "curves") for ext in ("png", "pdf")] + [RP["section"]]


def regime_section_files():
    """The regime section and the table that C3 and C4 cite, once the experiment has written them (committed, or just
    now by `snakemake regime`); none for a scale without the experiment or before it has run."""
    if not (REGIME.runs and os.path.isfile(RP["section"])):
        return []
    table = f"{RP['table']}.csv"
    if not os.path.isfile(table):  # `snakemake regime` writes both; the report cannot cite a table it cannot read
        raise ValueError(f"{RP['section']} is there but its table {table} is not: run `snakemake regime` again "
                         "(it writes both), or remove the section")
    return [RP["section"], table]


def regime_section_option(wildcards):
    """``--regime-section`` and ``--regime-table``. The report reads them as plain files, not as inputs (a fresh
    clone has the committed section but none of the experiment's runs, and an input would make `all` train the whole
    experiment again). The report rule's ``sections`` param reruns the report when they change."""
    files = regime_section_files()
    return f"--regime-section {files[0]} --regime-table {files[1]}" if files else ""

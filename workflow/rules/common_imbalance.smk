# Input and param functions of imbalance.smk (the anchor statistics of the report's imbalance section).

from retinanet.anchor_stats import split_annotations
from retinanet.config import DataConfig
from workflow.study import run_id

COCO_TRAIN_ANNOTATIONS = str(Path(DataConfig().root) / DataConfig().train_annotations)
"""COCO's training annotations where the paper scale keeps them (RunConfig's defaults, relative to the working
directory). At the other scales COCO's rate is measured from them when the file is there, else the report cites the
published rate (retinanet.anchor_stats.COCO_PUBLISHED)."""


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
    return {"config": P["run_config"].format(rid=wildcards.rid), "data": dataset_ready()}


def run_train_annotations(wildcards):
    """The training annotation file of the run (its resolved config's data root and path): anchor-stats reads it
    and nothing else of the dataset."""
    return str(split_annotations(STUDY.runs[wildcards.rid], train_split=True))


def anchor_stats_args(wildcards):
    """`retinanet anchor-stats` options from the scale config (``anchor_stats``, e.g. {images: 5000})."""
    return _options(config.get("anchor_stats"))

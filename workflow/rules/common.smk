# Named input/param functions and path patterns shared by the rules (no lambdas in rules).
# STUDY (workflow/study.py's Study) and P (its path patterns) are built in the Snakefile.

import hashlib
import re
import shlex

from workflow.study import runtime_options

W = config["workdir"]
R = config["results"]


wildcard_constraints:
    rid=r"[A-Za-z0-9._-]+",
    depth=r"\d+",
    table=r"1a|1b|1c|1d|1e|2|3|5\.1",
    fig=r"fig\d+",


def run_of(rid):
    """A run's resolved RunConfig: one of the study's, of the regime experiment's (REGIME, workflow/regime.py) or of
    the schedule check's (SCHEDULE, workflow/schedule.py)."""
    if rid in STUDY.runs:
        return STUDY.runs[rid]
    if rid in REGIME.runs:
        return REGIME.runs[rid]
    if rid in SCHEDULE.runs:
        return SCHEDULE.runs[rid]
    raise ValueError(f"unknown run {rid!r}: not part of the {config['scale']} study")


def run_data(rid):
    """What a run's data depends on: the scale's dataset (:func:`dataset_ready`) or its regime dataset variant."""
    return REGIME.data_of[rid] if rid in REGIME.runs else dataset_ready()


def run_config_content(wildcards):
    """The run config file's content (resolved RunConfig without runtime fields)."""
    run_of(wildcards.rid)  # an unknown run stops here, naming it
    if wildcards.rid in REGIME.runs:
        return REGIME.run_config(wildcards.rid)
    if wildcards.rid in SCHEDULE.runs:
        return SCHEDULE.run_config(wildcards.rid)
    return STUDY.run_config(wildcards.rid)


def run_dir(wildcards):
    return P["run_dir"].format(rid=wildcards.rid)


def eval_dir(wildcards):
    return P["eval_dir"].format(rid=wildcards.rid)


def dataset_ready():
    """What every run's data depends on: the generated dataset folder, or the COCO layout check's report."""
    if config["dataset"]["source"] == "synthetic":
        return config["dataset"]["root"]
    return f"{W}/data/coco-layout.json"


def train_inputs(wildcards):
    """A run's config file, its dataset and (if any) its cached pretrained weights. Nothing here changes with an
    operational setting (:func:`operational_options`), and none is ancient(): with Snakemake 9.27 a job whose
    ancient input's producer reruns is never checked itself, not even for a missing output."""
    inputs = {"config": P["run_config"].format(rid=wildcards.rid), "data": run_data(wildcards.rid)}
    pretrained = run_of(wildcards.rid).model.pretrained
    if config["weights"]["source"] in ("msra", "torchvision", "pretrain"):
        inputs["weights"] = pretrained
    return inputs


def operational_options(wildcards, input):
    """``--set`` options with today's values of the run's operational fields that its config file leaves out
    (workflow/study.py RUNTIME_FIELDS: data root and paths, workers, checkpoint and log periods, device; threads
    come from the launcher). Snakemake does not track a param derived from ``input`` (the argument is there for
    that alone): a new data root or worker count changes no file and no tracked param of the train job, so it
    reruns nothing, and the run's next train job uses it (docs/study.md, "Rerunning safely")."""
    return " ".join(f"--set {shlex.quote(option)}" for option in runtime_options(run_of(wildcards.rid)))


def train_history(wildcards):
    """The run's training log over all its jobs (appended; the rule's log holds the last job's only)."""
    return f"{W}/logs/train/{wildcards.rid}.history.log"


def job_gpus(wildcards, resources):
    """GPUs the job asked for (profile resource ``gpu``; 0 when unset), passed to the launcher: train's torchrun
    starts one process per GPU, and inside SLURM seeing fewer GPUs than this is an error."""
    return int(resources.get("gpu", 0) or 0)


def slurm_cpus(wildcards, resources, threads):
    """CPUs of the SLURM allocation (profile resource ``cpus_per_task``, else the rule's threads). The launcher uses
    it only inside a SLURM job; a local job uses its Snakemake threads."""
    return int(resources.get("cpus_per_task", 0) or threads)


PRETRAINED_WEIGHTS = r"resnet\d+-pretrain(?:-p[1-9]\d*)?"
"""A pretrained backbone's file stem (workflow/study.py weights_path): ``resnet18-pretrain`` is the first
pretraining of ResNet-18, ``resnet18-pretrain-p1`` its replica 1 (``seeds.pretrainings``)."""


def pretrain_args(wildcards):
    """``weights.args`` of the scale, with ``weights.depth_args["resnet<depth>"]`` over them, as ``python -m retinanet
    pretrain`` options, plus the depth and the seed: replica ``k`` pretrains with the scale's seed (``args.seed``,
    default 0) + ``k``, so replica 0 is the study's one pretraining as before."""
    depth, replica = re.fullmatch(r"resnet(\d+)-pretrain(?:-p(\d+))?", wildcards.weights).groups()
    depth, replica = int(depth), int(replica or 0)
    weights = config["weights"]
    per_depth = (weights.get("depth_args") or {}).get(f"resnet{depth}")
    args = {**(weights.get("args") or {}), **(per_depth or {})}
    args["seed"] = int(args.get("seed", 0)) + replica
    return _options({"depth": depth, **args})


def _options(mapping):
    """A config mapping as command-line options: ``{num_images: 2}`` -> ``--num-images 2``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in (mapping or {}).items())


def dataset_args(wildcards):
    """make-dataset options from the scale config (``dataset.args``)."""
    return _options(config["dataset"].get("args"))


def timing_args(wildcards):
    """`retinanet time` options from the scale config (``timing``)."""
    return _options(config.get("timing"))


def loss_samples_args(wildcards):
    """`retinanet loss-samples` options from the scale config (``loss_samples``)."""
    return _options(config.get("loss_samples"))


def coco_paths(wildcards, output):
    """The data fields every run uses (they are the same for all runs of a scale). Derived from ``output`` so that
    Snakemake does not track them: a moved dataset reruns neither check_coco nor, through its output, every train
    job; the train and evaluate jobs name a missing root themselves."""
    data = next(iter(STUDY.runs.values())).data
    counts = config["dataset"].get("images") or {}  # default: COCO 2017's counts (a rehearsal's tiny copy: its own)
    return (f"--root {data.root} --train-images {data.train_images} --train-annotations {data.train_annotations} "
            f"--val-images {data.val_images} --val-annotations {data.val_annotations}"
            + "".join(f" --{split}-count {counts[split]}" for split in ("train", "val") if split in counts))


def weights_url(wildcards, output):
    """``--url`` of fetch_weights where the scale names one (``weights.url``, ``{depth}`` replaced; a local path is
    made a file:// URL, relative to the working directory), else nothing (the published file). Derived from
    ``output``, so untracked: another mirror of the same file refetches nothing."""
    url = config["weights"].get("url")
    if not url:
        return ""
    url = url.format(depth=wildcards.depth)
    return f"--url {shlex.quote(url if '://' in url else Path(url).resolve().as_uri())}"


def manifest_content(wildcards):
    return STUDY.manifest


def all_run_outputs(wildcards):
    """Every metrics, timing and loss-sample file of the study (what the analysis reads through study.json)."""
    out = [P["metrics"].format(rid=rid) for rid in sorted(STUDY.runs)]
    out += [P["timing"].format(rid=rid) for rid in STUDY.timed]
    out += [P["loss_samples"].format(rid=rid) for rid in STUDY.loss_samples]
    return out


def table_outputs():
    return [f"{R}/tables/table_{t}.{ext}" for t in TABLES for ext in ("csv", "md")]


def figure_outputs():
    return [f"{R}/figures/{f}.{ext}" for f in FIGURES for ext in ("png", "pdf")]


def all_targets():
    return table_outputs() + figure_outputs() + [P["report"], P["manifest"]] + export_targets()


def _metrics_files(entries):
    """metrics.json (and timing.json) paths of manifest rows, including Table 1b's candidates."""
    out = []
    for e in entries:
        for cand in e.get("candidates", [e]):
            out += list(cand["metrics"].values()) + list(cand.get("timing", {}).values())
    return out


def table_inputs(wildcards):
    """The manifest and every metrics/timing file its rows for this table point to."""
    return {"study": P["manifest"], "runs": _metrics_files(STUDY.manifest["tables"][wildcards.table])}


def figure_inputs(wildcards):
    """The files a figure reads through the manifest (none for the analytic figures 1, 5 and 6)."""
    figs = STUDY.manifest["figures"]
    if wildcards.fig in ANALYTIC_FIGURES:
        return {}
    if wildcards.fig == "fig4":
        return {"study": P["manifest"], "samples": figs["fig4"]["samples"]}
    if wildcards.fig == "fig2":
        return {"study": P["manifest"], "runs": _metrics_files(STUDY.manifest["tables"][figs["fig2"]["table"]])}
    runs = _metrics_files(figs[wildcards.fig])
    if wildcards.fig == "fig7":  # FL* points are judged against Table 3's FL run (analysis/fig7.py)
        runs += _metrics_files(STUDY.manifest["tables"]["3"])
    return {"study": P["manifest"], "runs": runs}


def figure_source(wildcards, input):
    """``--study study.json`` for figures made from runs; nothing for the analytic ones."""
    return f"--study {input.study}" if "study" in input.keys() else ""


def wall_time_files():
    """Where the report reads the jobs' wall time: each training run's result.json (``wall_s``, summed over every
    job that worked on the run, retinanet/rundir/attempts.py; a retried or requeued run's benchmark record holds only its
    last job, and a reused run's only the reuse) and the evaluation jobs' benchmark records."""
    return ([P["result"].format(rid=rid) for rid in sorted(STUDY.runs)]
            + [f"{W}/benchmarks/evaluate/{rid}.tsv" for rid in sorted(STUDY.runs)])


def report_inputs(wildcards):
    """The report reads every table and figure, every run's outputs (through the manifest), the jobs' wall
    times (:func:`wall_time_files`) and the anchor statistics of its imbalance section (imbalance.smk)."""
    return {"study": P["manifest"], "tables": table_outputs(), "figures": figure_outputs(),
            "runs": all_run_outputs(wildcards), "wall": wall_time_files(), **imbalance_inputs()}


def report_sections(wildcards):
    """A digest of the sections the report includes as plain files (the regime experiment's and the schedule
    check's, not inputs: :func:`regime_section_option`). It is a param, so a section written anew reruns the report
    through the 'params' rerun trigger, and `all` never schedules the runs behind a committed section."""
    digest = hashlib.sha256()
    for path in regime_section_files() + schedule_section_files():
        digest.update(f"{path}\0".encode())
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def output_dir(wildcards, output):
    """The folder of the rule's first output."""
    return os.path.dirname(output[0])


def write_local(path, log_path, content):
    """Body of the small local rules: write ``content`` atomically as YAML (.yaml) or JSON, and a one-line log."""
    if path.endswith(".yaml"):
        atomic.write_text(path, yaml.safe_dump(content, sort_keys=False))
    else:
        atomic.write_json(path, content)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    Path(log_path).write_text(f"wrote {path}\n")

"""The Snakemake workflow: dry runs at every scale, config errors, lint, and the helper scripts of the rules.

The smoke DAG's end-to-end run (minutes) is `test_smoke_dag_runs_locally`; it runs when the engine and the analysis
scripts are present. The SLURM runs are in test_slurm.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from retinanet.config import DataConfig
from retinanet.data.coco_layout import check
from workflow.regime import build_regime
from workflow.scale import load_scale
from workflow.scripts import fetch_weights, launch
from workflow.study import build_study

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args: str, timeout: int = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--nolock", *args]
    return subprocess.run(cmd, cwd=cwd or workdir, capture_output=True, text=True, timeout=timeout, env=_env())


def _job_counts(out: str) -> dict[str, int]:
    """The dry run's 'Job stats' table as {rule: count}."""
    table = out.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.parametrize("args", [("--configfile", str(ROOT / "config" / "paper.yaml")), ("--config", "scale=paper")])
def test_paper_dry_run_lists_every_job_without_coco(tmp_path: Path, args):
    # Its wall time is a benchmark (python -m benchmarks: study level), not a timed test.
    res = snakemake(tmp_path, "-n", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    study = build_study(load_scale({"scale": "paper"}, ROOT / "config"))
    counts = _job_counts(res.stdout + res.stderr)
    assert counts["train"] == counts["evaluate"] == counts["run_config"] == len(study.runs) == 95
    assert counts["time"] == 10 and counts["loss_samples"] == 1
    assert counts["table"] == 8 and counts["figure"] == 6 and counts["report"] == 1
    assert counts["check_coco"] == 1 and counts["fetch_weights"] == 2 and "make_dataset" not in counts
    assert not (tmp_path / "data").exists()  # nothing was looked for or written


@pytest.mark.parametrize("scale", ["mini", "smoke"])
def test_small_scale_dry_runs_generate_data_and_fetch_nothing(tmp_path: Path, scale):
    res = snakemake(tmp_path, "-n", "--config", f"scale={scale}")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    assert counts["make_dataset"] == 1 and "fetch_weights" not in counts and "check_coco" not in counts
    assert counts["train"] == len(build_study(load_scale({"scale": scale}, ROOT / "config")).runs)


def test_slurm_profile_from_the_repository_root_selects_the_paper_scale(tmp_path: Path):
    """`--profile slurm` resolves to ./slurm/ (docs/slurm.md) and runs the paper scale; a dry run submits
    nothing."""
    res = snakemake(tmp_path, "-n", "--profile", "slurm", cwd=ROOT)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Using profiles slurm and workflow specific profile" in out
    assert _job_counts(out)["train"] == 95


def test_pretraining_options_can_differ_per_depth(tmp_path: Path):
    """``weights.depth_args`` replaces ``weights.args`` keys for one depth only (mini pretrains ResNet-34 less)."""
    weights = ("weights={source: pretrain, cache: work/smoke/weights, args: {iterations: 40, batch_size: 8, crop: 16},"
               " depth_args: {resnet34: {iterations: 7}}}")
    res = snakemake(tmp_path, "-n", "-p", "--config", "scale=smoke", weights)
    assert res.returncode == 0, res.stderr[-3000:]
    commands = {m.group(1): m.group(0) for m in re.finditer(r"retinanet pretrain .*--depth (\d+) .*", res.stdout)}
    assert "--iterations 40 --batch-size 8 --crop 16" in commands["18"]
    assert "--iterations 7 --batch-size 8 --crop 16" in commands["34"]
    bad = snakemake(tmp_path, "-n", "--config", "scale=smoke", weights.replace("resnet34:", "resnet33:"))
    assert bad.returncode != 0 and "weights.depth_args: 'resnet33' is not one of" in bad.stdout + bad.stderr


def test_default_scale_is_mini(tmp_path: Path):
    res = snakemake(tmp_path, "-n", "work/mini/study.json")
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize(("config", "message"), [
    ("seedz=1", "config smoke: <root>: Additional properties are not allowed ('seedz' was unexpected)"),
    ("workdir=5", "config smoke: workdir: 5 is not of type 'string'"),
    ("job_threads=0", "config smoke: job_threads: 0 is less than the minimum of 1"),
    ("base={solver: {iterationz: 3}}", "config smoke: base: solver.iterationz: unknown config key"),
    ("scale=huge", "config: scale 'huge' has no file"),
])
def test_config_errors_stop_before_any_job_with_one_clear_line(tmp_path: Path, config, message):
    res = snakemake(tmp_path, "--cores", "1", "--config", "scale=smoke", config)
    assert res.returncode != 0
    assert message in res.stderr
    assert not (tmp_path / "work").exists()


def test_lint_is_clean(tmp_path: Path):
    res = snakemake(tmp_path, "--lint")
    assert res.returncode == 0, res.stdout[-3000:]


# ----- launch.py: one process, or torchrun with one per GPU --------------------------------------------------------

def test_launch_cpu_job_is_one_process_with_the_jobs_threads():
    cmd, env = launch.command(["train", "--config", "c.yaml"], gpus=8, threads=2, visible=0, python="py")
    assert cmd == ["py", "-m", "retinanet", "train", "--config", "c.yaml"]
    assert env == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}


def test_launch_multi_gpu_job_runs_torchrun_with_one_process_per_gpu():
    cmd, env = launch.command(["train"], gpus=8, threads=32, visible=8, python="py")
    assert cmd == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "-m", "retinanet",
                   "train"]
    assert env["OMP_NUM_THREADS"] == "4"
    assert "--nproc_per_node=2" in launch.command(["train"], gpus=8, threads=32, visible=2, python="py")[0]


def test_launch_threads_come_from_the_slurm_allocation_only_inside_slurm():
    assert launch.job_threads(2, 32, {"SLURM_JOB_ID": "7"}) == 32
    assert launch.job_threads(2, 32, {}) == 2
    assert launch.job_threads(2, None, {"SLURM_JOB_ID": "7"}) == 2


def test_visible_gpus_is_capped_by_cuda_visible_devices():
    assert launch.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == 0


# ----- fetch_weights.py: hash-verified, atomic -----------------------------------------------------------------------

def _published(tmp_path: Path, content: bytes, prefix: str | None = None) -> Path:
    prefix = prefix or hashlib.sha256(content).hexdigest()[:8]
    path = tmp_path / "mirror" / f"resnet50-{prefix}.pth"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_fetch_weights_verifies_the_published_hash_prefix(tmp_path: Path):
    src = _published(tmp_path, b"weights" * 1000)
    out = tmp_path / "cache" / "resnet50-imagenet1k-v1.pth"
    digest = fetch_weights.fetch(src.as_uri(), out)
    assert out.read_bytes() == src.read_bytes() and digest == hashlib.sha256(src.read_bytes()).hexdigest()


def test_fetch_weights_refuses_a_corrupt_file_and_leaves_no_output(tmp_path: Path):
    src = _published(tmp_path, b"corrupt", prefix="0676ba61")
    out = tmp_path / "cache" / "resnet50-imagenet1k-v1.pth"
    assert fetch_weights.main(["--url", src.as_uri(), "--out", str(out)]) == 2
    assert not out.exists() and not list(out.parent.glob(".*tmp"))


def test_fetch_weights_uses_torchvisions_published_urls():
    url = fetch_weights.published_url(50)
    assert url.startswith("https://download.pytorch.org/models/resnet50-") and fetch_weights.hash_prefix(url)
    with pytest.raises(fetch_weights.WeightsError, match="no SHA-256 prefix"):
        fetch_weights.hash_prefix("https://example.org/resnet50.pth")


# ----- check-coco ---------------------------------------------------------------------------------------------------

def _coco(root: Path, train: int, val: int, annotations: bool = True) -> None:
    for split, n in (("train2017", train), ("val2017", val)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            (root / split / f"{i:012d}.jpg").write_bytes(b"x")
    if annotations:
        (root / "annotations").mkdir()
        for split in ("train2017", "val2017"):
            (root / "annotations" / f"instances_{split}.json").write_text("{}")


def test_check_coco_accepts_a_complete_layout(tmp_path: Path):
    _coco(tmp_path, 3, 2)
    report = check(tmp_path, DataConfig(), min_images={"train images": 3, "val images": 2})
    assert report["ok"] and report["problems"] == [] and report["fix"] == []


def test_check_coco_says_what_is_missing_and_how_to_get_it(tmp_path: Path):
    _coco(tmp_path, 3, 1, annotations=False)
    report = check(tmp_path, DataConfig(), min_images={"train images": 3, "val images": 2})
    assert not report["ok"]
    assert report["problems"] == [
        f"val images: {tmp_path / 'val2017'} holds 1 images, expected 2 (interrupted unzip?)",
        f"train annotations: file {tmp_path / 'annotations/instances_train2017.json'} is missing",
        f"val annotations: file {tmp_path / 'annotations/instances_val2017.json'} is missing"]
    assert any("zips/val2017.zip" in f for f in report["fix"])
    assert sum("annotations_trainval2017.zip" in f for f in report["fix"]) == 1
    assert not any("train2017.zip" in f for f in report["fix"])


def test_check_coco_cli_fails_with_one_error_line(tmp_path: Path):
    res = subprocess.run([sys.executable, "-m", "retinanet", "check-coco", "--root", str(tmp_path / "coco"),
                          "--out", str(tmp_path / "ok.json")], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert res.returncode == 2 and not (tmp_path / "ok.json").exists()
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "train2017 is missing" in line and "wget -c http://images.cocodataset.org/zips/train2017.zip" in line


# ----- the smoke DAG, end to end --------------------------------------------------------------------------------------

def _pipeline_ready() -> bool:
    return all((ROOT / p).is_file()
               for p in ("retinanet/engine/train.py", "retinanet/modeling/losses.py", "analysis/report.py"))


@pytest.mark.slow
@pytest.mark.skipif(not _pipeline_ready(), reason="the retinanet engine or the analysis scripts are not there yet")
def test_smoke_dag_runs_locally(tmp_path: Path):
    """Every rule of the study at smoke scale on 2 cores (< 10 min); then a second run has nothing to do."""
    start = time.monotonic()
    res = snakemake(tmp_path, "--cores", "2", "--config", "scale=smoke", timeout=900)
    wall = time.monotonic() - start
    assert res.returncode == 0, res.stderr[-5000:]
    manifest = json.loads((tmp_path / "work/smoke/study.json").read_text())
    for depth in (18, 34):  # the ImageNet stand-in, pretrained once per depth (retinanet/tools/pretrain.py)
        weights = tmp_path / f"work/smoke/weights/resnet{depth}-pretrain.pth"
        assert weights.is_file() and json.loads(Path(f"{weights}.json").read_text())["config"]["depth"] == depth
    for rid, entry in manifest["runs"].items():
        result = json.loads((tmp_path / entry["result"]).read_text())
        assert result["status"] in ("completed", "diverged"), rid
        metrics = json.loads((tmp_path / entry["metrics"]).read_text())
        assert 0 <= metrics["AP"] <= 100
    for table in ("1a", "1b", "1c", "1d", "1e", "2", "3", "5.1"):
        assert (tmp_path / f"results/smoke/tables/table_{table}.md").stat().st_size > 0
    for fig in ("fig1", "fig2", "fig4", "fig5", "fig6", "fig7"):
        assert (tmp_path / f"results/smoke/figures/{fig}.png").stat().st_size > 0
    report = (tmp_path / "results/smoke/REPORT.md").read_text()
    # wall time from Snakemake's benchmark records of every train and evaluate job
    assert f"Summed job time over {2 * len(manifest['runs'])} given benchmark/result files" in report
    assert wall < 600, f"smoke DAG took {wall:.0f} s"
    again = snakemake(tmp_path, "-n", "--config", "scale=smoke")
    assert "Nothing to be done" in again.stdout + again.stderr
    # snakemake --report: one self-contained HTML page with the figures and tables
    html = snakemake(tmp_path, "--report", "report.html", "--config", "scale=smoke", timeout=300)
    assert html.returncode == 0, html.stderr[-3000:]
    page = (tmp_path / "report.html").read_text(errors="replace")
    assert all(f"{fig}.png" in page for fig in ("fig1", "fig2", "fig4", "fig5", "fig6", "fig7"))
    assert "table_3.csv" in page


def _workflow_copy(dest: Path) -> Path:
    """The workflow's files copied to ``dest`` (the engine and the analysis linked), so that a test may edit a rule;
    returns the copy's Snakefile."""
    dest.mkdir()
    for name in ("Snakefile", "environment.yml"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("workflow", "config", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("retinanet", "analysis"):
        (dest / name).symlink_to(ROOT / name)
    return dest / "Snakefile"


TRAIN_JOB = re.compile(r"^(local)?rule train:", re.M)


@pytest.mark.slow
@pytest.mark.skipif(not _pipeline_ready(), reason="the retinanet engine or the analysis scripts are not there yet")
def test_rerunning_the_dag_retrains_a_finished_run_only_for_a_scientific_change(tmp_path: Path):
    """One smoke run, then reruns: operational settings (a moved dataset, workers, checkpoint and log periods), an
    edited train rule and a regenerated run config start no train job; --forcerun train starts one that reuses the
    finished model; a scientific change retrains and the job's log says which field changed (docs/study.md,
    "Rerunning safely")."""
    snakefile = _workflow_copy(tmp_path / "wf")
    work = tmp_path / "work"
    work.mkdir()
    rid = "r50-600-fl-g2-a0.25-s0"
    run, job_log = work / "work/smoke/runs" / rid, work / "work/smoke/logs/train" / f"{rid}.log"

    def smk(*config: str, options: tuple[str, ...] = ()) -> str:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(work), "--nolock", "--cores", "2",
               *options, "--config", "scale=smoke", *config, "--", f"work/smoke/runs/{rid}/result.json"]
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300, env=_env())
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout + res.stderr

    assert TRAIN_JOB.search(smk())
    final = (run / "model_final.pt").stat().st_mtime_ns

    shutil.copytree(work / "work/smoke/data", work / "moved/data")  # same files, same times, another root
    (work / "operational.yaml").write_text(  # --config would pass the numbers as strings
        "base: {data: {num_workers: 1}, solver: {checkpoint_period: 2, log_period: 2}}\n")
    out = smk("dataset={root: moved/data}", options=("--configfile", str(work / "operational.yaml")))
    assert not TRAIN_JOB.search(out), out[-3000:]

    smk(options=("--forcerun", "run_config", "--until", "run_config"))  # the same content, written anew
    rules = snakefile.parent / "workflow/rules/train.smk"  # and an edited train rule
    text = rules.read_text()
    assert "train --config {input.config}" in text
    rules.write_text(text.replace("train --config {input.config}", "train  --config {input.config}"))
    assert not TRAIN_JOB.search(smk())

    assert TRAIN_JOB.search(smk(options=("--forcerun", "train")))
    assert "reusing finished run" in job_log.read_text()
    history = job_log.with_name(f"{rid}.history.log").read_text()  # every job's section, appended
    assert history.count("== train job ") == 2 and "reusing finished run" in history
    assert (run / "model_final.pt").stat().st_mtime_ns == final

    (work / "science.yaml").write_text("base: {model: {fpn_channels: 8}}\n")
    assert TRAIN_JOB.search(smk(options=("--configfile", str(work / "science.yaml"))))
    assert "model.fpn_channels: 16 -> 8" in job_log.read_text()
    assert (run / "model_final.pt").stat().st_mtime_ns != final


# ----- the regime experiment (issue 18, this study's addition): `snakemake regime` ----------------------------------

def test_mini_regime_dry_run_lists_its_jobs_and_all_trains_none_of_them(tmp_path: Path):
    regime = build_regime(load_scale({"scale": "mini"}, ROOT / "config"))
    res = snakemake(tmp_path, "-n", "regime", "--config", "scale=mini")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    # 4 rates x 3 arms x (3 seeds at the two ends, 2 between) = 30 runs; 18 end runs x 3 snapshots
    assert counts["train"] == counts["evaluate"] == counts["run_config"] == len(regime.runs) == 30
    assert counts["evaluate_snapshot"] == 54 and counts["regime_dataset"] == counts["anchor_stats"] == 4
    assert all(counts[r] == 1 for r in ("regime_table", "regime_figure", "regime_curves", "regime_section"))
    main = _job_counts(snakemake(tmp_path, "-n", "--config", "scale=mini").stdout)
    assert "regime_dataset" not in main and "evaluate_snapshot" not in main


def test_committed_sections_go_into_the_report_without_rerunning_their_experiments(tmp_path: Path):
    """A fresh clone has results/mini's committed regime and schedule sections but none of their runs: `all` trains
    the study's runs only, and its report still includes both sections (plain files, not inputs)."""
    results = tmp_path / "results" / "mini"
    (results / "tables").mkdir(parents=True)
    (results / "regime.md").write_text("## This study's addition (not in the paper)\n")
    (results / "tables" / "table_imbalance.csv").write_text("rate,arm\n")
    (results / "schedule.md").write_text("## schedule\n")
    res = snakemake(tmp_path, "-n", "-p", "--config", "scale=mini")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    study = build_study(load_scale({"scale": "mini"}, ROOT / "config"))
    assert counts["train"] == len(study.runs) and counts["report"] == 1
    assert not {"regime_dataset", "evaluate_snapshot", "regime_section", "schedule_table"} & set(counts)
    assert ("--regime-section results/mini/regime.md --regime-table results/mini/tables/table_imbalance.csv"
            in res.stdout) and "--schedule-section results/mini/schedule.md" in res.stdout


def test_a_regime_section_without_its_table_is_named(tmp_path: Path):
    """A committed regime section whose table is missing stops the DAG with both paths named, not a traceback."""
    (tmp_path / "results" / "mini").mkdir(parents=True)
    (tmp_path / "results" / "mini" / "regime.md").write_text("## This study's addition (not in the paper)\n")
    res = snakemake(tmp_path, "-n", "--config", "scale=mini")
    assert res.returncode != 0
    assert ("results/mini/regime.md is there but its table results/mini/tables/table_imbalance.csv is not"
            in res.stdout + res.stderr)


def test_regime_without_a_regime_section_stops_with_one_clear_line(tmp_path: Path):
    res = snakemake(tmp_path, "-n", "regime", "--config", "scale=paper")
    assert res.returncode != 0
    assert "config paper: no 'regime' section" in res.stdout + res.stderr


@pytest.mark.slow
@pytest.mark.skipif(not _pipeline_ready(), reason="the retinanet engine or the analysis scripts are not there yet")
def test_smoke_regime_runs_end_to_end(tmp_path: Path):
    """`snakemake regime` at smoke scale (2 rates x 3 arms x 1 seed, 2 iterations): the table has one row per rate,
    both figures and the report section exist, and the next report run includes the section."""
    start = time.monotonic()
    res = snakemake(tmp_path, "--cores", "2", "regime", "--configfile", str(ROOT / "config" / "smoke.yaml"),
                    timeout=600)
    print(f"smoke regime: {time.monotonic() - start:.0f} s")  # ~90 s alone on 2 cores; reported, not asserted
    assert res.returncode == 0, res.stderr[-5000:]
    results = tmp_path / "results" / "smoke"
    md = (results / "tables" / "table_imbalance.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 3 and "x COCO's" in rows[1] and rows[2].split(" | ")[1] == "80"  # header + 2 rates
    table = (results / "tables" / "table_imbalance.csv").read_text().splitlines()
    assert len(table) == 1 + 2 * 3
    for name in ("fig_imbalance", "fig_imbalance_curves"):
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 0
    section = (results / "regime.md").read_text()
    assert section.startswith("## This study's addition (not in the paper)")
    regime = json.loads((tmp_path / "work" / "smoke" / "regime" / "regime.json").read_text())
    for rate in regime["rates"]:  # both rates are ends: a curve point after iteration 1 and the final one
        for arm in rate["arms"].values():
            assert sorted(arm["curve"]["0"]) == ["1", "2"]
            assert json.loads((tmp_path / arm["curve"]["0"]["1"]).read_text())["iteration"] == 1
    dry = snakemake(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config" / "smoke.yaml"))
    assert "--regime-section results/smoke/regime.md" in dry.stdout


def test_pretraining_replicas_are_pretrained_with_their_own_seed(tmp_path: Path):
    """``seeds.pretrainings: [0, 1]``: the headline rows' runs on replica 1 start from resnet<depth>-pretrain-p1.pth,
    which its own pretrain job makes with seed 1 (replica 0 keeps the scale's seed 0 and its file name)."""
    overlay = tmp_path / "replicas.yaml"
    overlay.write_text('scale: smoke\nseeds: {headline: [0, 1], sweep: [0], pretrainings: [0, 1], '
                       'headline_tables: ["3", "1d"]}\n')
    res = snakemake(tmp_path, "-n", "-p", "--configfile", str(overlay))
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    pretrain = sorted(set(re.findall(r"retinanet pretrain .*?--out (\S+) .*?--depth (\d+) .*?--seed (\d+)", out)))
    assert pretrain == [("work/smoke/weights/resnet18-pretrain-p1.pth", "18", "1"),
                        ("work/smoke/weights/resnet18-pretrain.pth", "18", "0"),
                        ("work/smoke/weights/resnet34-pretrain-p1.pth", "34", "1"),  # smoke's Table 1d: R101
                        ("work/smoke/weights/resnet34-pretrain.pth", "34", "0")]
    study = build_study(load_scale({"scale": "smoke", "seeds": yaml.safe_load(overlay.read_text())["seeds"]},
                                   ROOT / "config"))
    assert _job_counts(out)["train"] == len(study.runs)
    rows = study.manifest["tables"]["3"] + study.manifest["tables"]["1d"]
    assert {rid for rid in study.runs if "-p1-" in rid} == {f"{e['run']}-p1-s{s}" for e in rows for s in (0, 1)}
    assert all(study.runs[f"{e['run']}-p1-s1"].model.pretrained.endswith("-pretrain-p1.pth") for e in rows)

"""The schedule check (issue 18, item 4, this study's check): its runs and manifest from a scale config
(workflow/schedule.py), its table and report section on a hand-made manifest (analysis/schedule.py), the report's
inclusion of the section, and `snakemake schedule` at smoke scale end to end."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis import report
from analysis import schedule as analysis_schedule
from analysis.errors import AnalysisInputError
from analysis.fake_study import write_fake_study
from workflow.scale import StudyError, load_scale
from workflow.schedule import CONTRASTS, build_schedule, schedule_paths
from workflow.study import build_study

ROOT = Path(__file__).resolve().parents[1]
SETTINGS_MINI = {  # setting -> its study run (1x) at mini; Table 1d's FL is Table 3's FL run (deep_depth 50)
    "fl": "r50-600-fl-g2-a0.25", "ce": "r50-600-ce-a0.75", "fls": "r50-600-fls-g2-b1-a0.25",
    "fl-1d": "r50-600-fl-g2-a0.25", "ohem": "r50-600-ohem-b128-n0.5"}


def _scale(name: str, **over) -> dict:
    return load_scale({"scale": name, **over}, ROOT / "config")


def _built(scale: dict):
    study = build_study(scale)
    return study, build_schedule(scale, study)


# ----- the runs and the manifest (workflow/schedule.py) -------------------------------------------------------------

def test_mini_trains_the_four_headline_settings_at_twice_the_iterations_and_reuses_the_study_runs():
    scale = _scale("mini")
    study, sched = _built(scale)
    assert scale["schedule_check"] == {"multiple": 2, "pretrainings": [0]}
    assert (scale["seeds"]["headline"], scale["seeds"]["pretrainings"]) == ([0, 1], [0, 1])
    names = sorted(set(SETTINGS_MINI.values()))
    # 4 settings x 2 seeds on the first pretraining = 8 runs: the cost that config/mini.yaml's comment states
    assert sorted(sched.runs) == sorted(f"{n}-2x-s{s}" for n in names for s in (0, 1))
    assert len(sched.runs) == 8 and not set(sched.runs) & set(study.runs)
    for rid, cfg in sched.runs.items():
        assert cfg.solver.iterations == 2000
        base = copy.deepcopy(study.runs[rid.replace("-2x", "")])
        assert base.solver.iterations == 1000
        base.solver.iterations = 2000
        assert cfg == base  # the schedule is the only difference from the study's run
    m = sched.manifest
    assert [s["key"] for s in m["schedules"]] == ["1x", "2x"] and m["schedules"][1]["multiple"] == 2.0
    assert list(m["settings"]) == ["fl", "ce", "fls", "fl-1d", "ohem"]
    for key, entry in m["settings"].items():
        run = SETTINGS_MINI[key]
        assert entry["runs"] == {"1x": run, "2x": f"{run}-2x"} and entry["iterations"] == {"1x": 1000, "2x": 2000}
        assert entry["seeds"] == [0, 1] and entry["pretrainings"] == [0]
        row = next(e for e in study.manifest["tables"][entry["table"]] if e["key"] == entry["row"])
        assert list(row["metrics"]) == ["0", "1", "p1-s0", "p1-s1"]
        # the study's own files on the first pretraining: reused, never retrained; the same replicates at 2x
        assert entry["metrics"]["1x"] == {key: row["metrics"][key] for key in ("0", "1")}
        assert entry["metrics"]["2x"] == {key: f"work/mini/eval/{run}-2x-s{key}/metrics.json" for key in ("0", "1")}
    assert m["settings"]["ohem"]["row"] == "method=OHEM,batch=128,nms=0.5"
    assert [(c["claim"], c["a"], c["b"], c["test"]) for c in m["contrasts"]] == [
        ("C3", "fl", "ce", "greater"), ("C6", "fl-1d", "ohem", "greater"), ("C7", "fls", "fl", "equal")]
    assert schedule_paths(scale) == {"manifest": "work/mini/schedule/schedule.json",
                                     "table": "results/mini/tables/table_schedule",
                                     "section": "results/mini/schedule.md"}


def test_each_setting_is_the_loss_the_contrast_names():
    _, sched = _built(_scale("mini"))
    fl, ce, fls, ohem = (sched.runs[f"{SETTINGS_MINI[k]}-2x-s0"] for k in ("fl", "ce", "fls", "ohem"))
    assert (fl.loss.cls, fl.loss.gamma, fl.loss.alpha) == ("focal", 2.0, 0.25)
    assert (ce.loss.cls, ce.loss.gamma, ce.loss.alpha) == ("focal", 0.0, 0.75)
    assert (fls.loss.cls, fls.loss.gamma, fls.loss.beta, fls.loss.alpha) == ("focal_star", 2.0, 1.0, 0.25)
    assert (ohem.loss.sampling, ohem.loss.ohem_batch, ohem.loss.ohem_nms, ohem.loss.gamma, ohem.loss.alpha) == \
        ("ohem", 4, 0.5, 0.0, None)
    assert {c.claim for c in CONTRASTS} == {"C3", "C6", "C7"}


def test_smoke_trains_table_1d_fl_at_its_deep_depth_as_its_own_run():
    study, sched = _built(_scale("smoke"))
    assert sorted(sched.runs) == ["r101-600-fl-g2-a0.25-2x-s0", "r101-600-ohem-b128-n0.7-2x-s0",
                                  "r50-600-ce-a0.75-2x-s0", "r50-600-fl-g2-a0.25-2x-s0",
                                  "r50-600-fls-g2-b1-a0.25-2x-s0"]
    assert sched.runs["r101-600-fl-g2-a0.25-2x-s0"].model.depth == 34
    assert {cfg.solver.iterations for cfg in sched.runs.values()} == {4}
    assert sched.manifest["settings"]["fl-1d"]["runs"]["1x"] + "-s0" in study.runs


def test_a_multiple_of_three_names_its_runs_3x():
    _, sched = _built(_scale("smoke", schedule_check={"multiple": 3}))
    assert sched.manifest["schedules"][1] == {"key": "3x", "multiple": 3.0}
    assert "r50-600-fl-g2-a0.25-3x-s0" in sched.runs and sched.runs["r50-600-fl-g2-a0.25-3x-s0"].solver.iterations == 6


def test_pretraining_replicas_of_the_study_are_repeated_at_the_longer_schedule():
    scale = _scale("smoke")
    scale["seeds"]["pretrainings"] = [0, 1]
    scale["seeds"]["headline_rows"] = {"3": ["loss=CE", "loss=FL,gamma=2", "loss=FL*,gamma=2,beta=1"],
                                       "1d": ["method=OHEM,batch=128,nms=0.7", "method=FL"]}
    study, sched = _built(scale)
    ce = sched.manifest["settings"]["ce"]
    assert ce["pretrainings"] == [0, 1] and sorted(ce["metrics"]["2x"]) == sorted(ce["metrics"]["1x"]) == ["0", "p1-s0"]
    assert ce["metrics"]["2x"]["p1-s0"] == "work/smoke/eval/r50-600-ce-a0.75-2x-p1-s0/metrics.json"
    assert sched.runs["r50-600-ce-a0.75-2x-p1-s0"].model.pretrained == \
        study.runs["r50-600-ce-a0.75-p1-s0"].model.pretrained == "work/smoke/weights/resnet18-pretrain-p1.pth"
    assert len(sched.runs) == 10


def test_no_section_means_no_check_and_bad_sections_name_the_key():
    scale = _scale("paper")
    assert "schedule_check" not in scale
    assert build_schedule(scale, build_study(scale)).runs == {}
    for value, message in (({"multiple": 1}, r"config smoke: schedule_check.multiple: must be a number > 0 other "
                                             r"than 1, got 1$"),
                           ({"multiple": "2"}, r"schedule_check.multiple: must be a number > 0 other than 1, got '2'"),
                           ({"multiple": 2, "seeds": [0]}, r"config smoke: schedule_check: expected a mapping with "
                                                           r"the key 'multiple' \(and optionally 'pretrainings'\), "
                                                           r"got \['multiple', 'seeds'\]"),
                           ({"multiple": 2, "pretrainings": []}, r"schedule_check.pretrainings: must be a non-empty "
                                                                 r"list of replica numbers >= 0, got \[\]"),
                           ({"multiple": 2, "pretrainings": [1]}, r"config smoke: schedule_check fl: "
                                                                  r"schedule_check.pretrainings \[1\] has none of the "
                                                                  r"study's pretrainings \[0\]")):
        scale = _scale("smoke", schedule_check=value)
        with pytest.raises(StudyError, match=message):
            build_schedule(scale, build_study(scale))
    mini = _scale("mini")
    mini["seeds"]["headline_rows"]["1d"] = ["method=FL"]  # OHEM back at the sweep seeds
    with pytest.raises(StudyError, match=r"^config mini: schedule_check ohem: the study runs Table 1d row "
                                         r"'method=OHEM,batch=128,nms=0.5' at seeds \[0\], not the headline seeds "
                                         r"\[0, 1\] \(seeds.headline_rows\)$"):
        _built(mini)


# ----- the table and the section (analysis/schedule.py) on a hand-made manifest -------------------------------------

AP_1X = {"fl": [30.7, 29.7, 29.9], "ce": [42.5, 41.8, 42.1], "fls": [34.4, 33.1, 31.6], "ohem": [14.2, 1.5, 10.5]}
AP_2X = {"fl": [33.0, 32.5, 33.5], "ce": [44.0, 43.5, 44.5], "fls": [36.0, 37.0, 35.0], "ohem": [12.0, 4.0, 8.0]}
LABELS = {"fl": "FL (γ 2, α .25)", "ce": "α-CE (α .75)", "fls": "FL* (γ 2, β 1)", "ohem": "OHEM (batch 128, nms 0.5)"}


def write_fake_schedule(root: Path, ap_2x: dict[str, list[float]]) -> Path:
    """A finished check as workflow/schedule.py writes it at mini; Table 1d's FL is Table 3's FL run."""
    settings = {}
    for key in ("fl", "ce", "fls", "fl-1d", "ohem"):
        run = "fl" if key == "fl-1d" else key
        metrics = {}
        for sched, aps in (("1x", AP_1X[run]), ("2x", ap_2x[run])):
            metrics[sched] = {}
            for seed, ap in enumerate(aps):
                path = root / "eval" / f"{run}-{sched}-s{seed}" / "metrics.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps({"AP": ap, "status": "completed"}))
                metrics[sched][str(seed)] = str(path)
        settings[key] = {"label": "FL (Table 1d: depth 50, scale 600)" if key == "fl-1d" else LABELS[key],
                         "table": "1d" if key in ("fl-1d", "ohem") else "3", "row": key, "seeds": [0, 1, 2],
                         "pretrainings": [0], "runs": {"1x": run, "2x": f"{run}-2x"},
                         "iterations": {"1x": 1000, "2x": 2000}, "metrics": metrics}
    manifest = {"scale": "mini", "schedules": [{"key": "1x", "multiple": 1.0}, {"key": "2x", "multiple": 2.0}],
                "settings": settings,
                "contrasts": [{"claim": c.claim, "label": c.label, "a": c.a, "b": c.b, "test": c.test}
                              for c in CONTRASTS]}
    path = root / "schedule.json"
    path.write_text(json.dumps(manifest))
    return path


def _rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]


def test_verdicts_that_hold_at_both_schedules_are_unchanged(tmp_path):
    result = analysis_schedule.load_results(write_fake_schedule(tmp_path, AP_2X))
    c3, c6, c7 = result.contrasts
    assert c3.comparisons["1x"].diff == pytest.approx(30.1 - 42.133333, abs=1e-5)
    assert c3.comparisons["1x"].outcome.value == c3.comparisons["2x"].outcome.value == "less"
    assert (c3.holds("1x"), c3.holds("2x"), c3.verdict("2x")) == (False, False, "not reproduced")
    assert c6.comparisons["1x"].diff == pytest.approx(30.1 - 8.733333, abs=1e-5)
    assert (c6.holds("1x"), c6.holds("2x"), c6.verdict("1x")) == (True, True, "reproduced")
    assert c7.comparisons["2x"].diff == pytest.approx(3.0) and c7.comparisons["2x"].threshold == pytest.approx(1.5811,
                                                                                                             abs=1e-4)
    assert (c7.holds("1x"), c7.holds("2x")) == (False, False)
    assert result.changed == []
    assert analysis_schedule.changes_sentence(result) == "Going from 1x to 2x changes none of the 3 verdicts."


def test_a_verdict_that_doubling_flips_is_named_in_the_table_and_the_section(tmp_path):
    path = write_fake_schedule(tmp_path, {**AP_2X, "ohem": [31.0, 33.0, 32.0]})  # OHEM catches up with FL at 2x
    out = tmp_path / "out"
    assert analysis_schedule.main(["table", "--schedule", str(path), "--out", str(out / "t.csv"),
                                   str(out / "t.md")]) == 0
    rows = _rows((out / "t.md").read_text())
    assert len(rows) == 1 + 3 * 2
    assert rows[3] == ("| C6: FL (Table 1d: depth 50, scale 600) > OHEM (batch 128, nms 0.5) | 1x (1000) | "
                       "30.1 ± 0.5 (s0 30.7, s1 29.7, s2 29.9) | 8.7 ± 6.5 (s0 14.2, s1 1.5, s2 10.5) | +21.4 (9.3) | "
                       "greater | holds → reproduced |  |")
    assert rows[4] == ("|  | 2x (2000) | 33.0 ± 0.5 (s0 33.0, s1 32.5, s2 33.5) | 32.0 ± 1.0 (s0 31.0, s1 33.0, "
                       "s2 32.0) | +1.0 (1.6) | equal within seed noise | fails → not reproduced | **yes** |")
    assert rows[2].endswith("| less | fails → not reproduced | no |") and rows[6].endswith("| no |")
    assert rows[5].startswith("| C7: FL* (γ 2, β 1) ≈ FL (γ 2, α .25) | 1x (1000) |")
    table = list(csv.DictReader(io.StringIO((out / "t.csv").read_text())))
    assert [(r["claim"], r["schedule"], r["holds"], r["verdict_changed"]) for r in table] == [
        ("C3", "1x", "fails", "False"), ("C3", "2x", "fails", "False"), ("C6", "1x", "holds", "True"),
        ("C6", "2x", "fails", "True"), ("C7", "1x", "fails", "False"), ("C7", "2x", "fails", "False")]
    assert table[3]["a_run"] == "fl-2x" and table[3]["b_run"] == "ohem-2x" and table[3]["iterations"] == "2000"
    assert analysis_schedule.main(["section", "--schedule", str(path), "--table", str(out / "t.md"),
                                   "--out", str(out / "s.md")]) == 0
    section = (out / "s.md").read_text()
    assert section.startswith("## This study's check (not in the paper): the headline verdicts at a longer schedule")
    assert ("**Going from 1x to 2x changes 1 of the 3 verdicts: C6 (FL vs OHEM (Table 1d)): reproduced at 1x, not "
            "reproduced at 2x.** FL (γ 2, α .25) - α-CE (α .75): -12.0 AP at 1x, -11.0 AP at 2x.") in section
    # Table 1d's FL is the same run as Table 3's: listed once
    assert "AP from 1x to 2x: FL (γ 2, α .25) 30.1 → 33.0 (+2.9), α-CE (α .75) 42.1 → 44.0 (+1.9), FL* (γ 2, β 1) " \
           "33.0 → 36.0 (+3.0), OHEM (batch 128, nms 0.5) 8.7 → 32.0 (+23.3)." in section
    assert "(1000 → 2000 iterations;" in section and (out / "t.md").read_text() in section


def test_a_missing_metrics_file_or_unknown_test_names_the_file(tmp_path):
    path = write_fake_schedule(tmp_path, AP_2X)
    (tmp_path / "eval" / "ohem-2x-s1" / "metrics.json").unlink()
    with pytest.raises(AnalysisInputError, match=r"ohem-2x-s1/metrics.json: metrics file not found"):
        analysis_schedule.load_results(path)
    path = write_fake_schedule(tmp_path, AP_2X)
    data = json.loads(path.read_text())
    data["contrasts"][0]["test"] = "less"
    path.write_text(json.dumps(data))
    with pytest.raises(AnalysisInputError, match=r"schedule.json: malformed schedule manifest .*test 'less' is not "
                                                 r"one of \['equal', 'greater'\]"):
        analysis_schedule.load_results(path)


def test_report_includes_the_schedule_section_after_the_regime_section(tmp_path):
    study = write_fake_study(tmp_path / "study")
    regime, sched = tmp_path / "regime.md", tmp_path / "schedule.md"
    regime.write_text("## This study's addition (not in the paper): FL against CE across the imbalance\n\nrows\n")
    sched.write_text(f"## {analysis_schedule.TITLE}\n\nrows\n")
    out = tmp_path / "R.md"
    assert report.main(["--study", str(study), "--out", str(out), "--regime-section", str(regime),
                        "--schedule-section", str(sched)]) == 0
    text = out.read_text()
    assert text.index("## Figures") < text.index("## This study's addition") \
        < text.index("## This study's check (not in the paper)") < text.index("## Deviations from the paper")
    assert report.main(["--study", str(study), "--out", str(out), "--schedule-section",
                        str(tmp_path / "none.md")]) == 2


# ----- the DAG: `snakemake schedule` ----------------------------------------------------------------------------------

def snakemake(workdir: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--nolock", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def _job_counts(out: str) -> dict[str, int]:
    import re

    table = out.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def test_mini_schedule_dry_run_lists_the_new_runs_and_all_trains_none_of_them(tmp_path: Path):
    """In an empty folder the target also trains the 8 study runs it compares (beside a finished study it would
    not): 16 = 8 study runs on the first pretraining + 8 new; `all` trains none of the new."""
    res = snakemake(tmp_path, "-n", "schedule", "--config", "scale=mini")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = _job_counts(res.stdout + res.stderr)
    assert counts["train"] == counts["evaluate"] == counts["run_config"] == 16
    assert all(counts[r] == 1 for r in ("schedule_manifest", "schedule_table", "schedule_section", "schedule"))
    assert "-2x-s0" in res.stdout
    main = snakemake(tmp_path, "-n", "--config", "scale=mini")
    assert main.returncode == 0 and "-2x-s" not in main.stdout and "schedule_table" not in main.stdout


def test_schedule_without_a_section_stops_with_one_clear_line(tmp_path: Path):
    res = snakemake(tmp_path, "-n", "schedule", "--config", "scale=paper")
    assert res.returncode != 0
    assert "config paper: no 'schedule_check' section" in res.stdout + res.stderr


@pytest.mark.slow
def test_smoke_schedule_runs_end_to_end(tmp_path: Path):
    """`snakemake schedule` at smoke scale (5 settings x 1 seed at 2 and 4 iterations): the table has two rows per
    contrast, the section names the changed verdicts (or none), and the next report run includes it."""
    start = time.monotonic()
    res = snakemake(tmp_path, "--cores", "2", "schedule", "--configfile", str(ROOT / "config" / "smoke.yaml"),
                    timeout=900)
    print(f"smoke schedule: {time.monotonic() - start:.0f} s")  # reported, not asserted
    assert res.returncode == 0, res.stderr[-5000:]
    results = tmp_path / "results" / "smoke"
    rows = _rows((results / "tables" / "table_schedule.md").read_text())
    assert len(rows) == 1 + 3 * 2 and [r.split(" | ")[1] for r in rows[1:]] == ["1x (2)", "2x (4)"] * 3
    assert len((results / "tables" / "table_schedule.csv").read_text().splitlines()) == 1 + 3 * 2
    section = (results / "schedule.md").read_text()
    assert section.startswith(f"## {analysis_schedule.TITLE}") and "**Going from 1x to 2x changes " in section
    manifest = json.loads((tmp_path / "work" / "smoke" / "schedule" / "schedule.json").read_text())
    for entry in manifest["settings"].values():
        for sched, iterations in (("1x", 2), ("2x", 4)):
            rid = f"{entry['runs'][sched]}-s0"
            assert json.loads((tmp_path / f"work/smoke/runs/{rid}/result.json").read_text())["iteration"] == iterations
    dry = snakemake(tmp_path, "-n", "-p", "--configfile", str(ROOT / "config" / "smoke.yaml"))
    assert "--schedule-section results/smoke/schedule.md" in dry.stdout

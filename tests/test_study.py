"""The study definition (workflow/study.py): every table/figure row against the paper's setting of its run.

The expectations below are written from the paper's text (Table 1 caption: gamma 2, 3x3 anchors, ResNet-50-FPN,
600 px unless noted; section 5: 90k iterations, lr .01 dropped 10x at 60k and 80k, 16 images per batch; Table 1d:
ResNet-101; Table 2: ResNet-101-800, scale jitter, 1.5x longer; appendix A: FL* with alpha .25), not from the code.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from retinanet.config import ConfigError, RunConfig, from_dict, merge, to_dict
from retinanet.config_parsing import parse_overrides
from retinanet.rundir.identity import value
from workflow.rows import fmt
from workflow.scale import StudyError, load_scale, undeclared_overrides
from workflow.study import RUNTIME_FIELDS, build_study, resolve, run_name, runtime_options

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def paper():
    scale = load_scale({"scale": "paper"}, CONFIG)
    return scale, build_study(scale)


def _row(study, table, key):
    rows = study.manifest["tables"][table]
    if table == "1b":
        gamma_key, alpha = key
        (row,) = [r for r in rows if r["key"] == gamma_key]
        (cand,) = [c for c in row["candidates"] if c["alpha"] == alpha]
        return cand
    (row,) = [r for r in rows if r["key"] == key]
    return row


def _cfg(study, row, seed=0):
    return study.runs[f"{row['run']}-s{seed}"]


def _check(cfg: RunConfig, *, depth=50, scale=600, max_size=1000, cls="focal", gamma=2.0, alpha=0.25, beta=None,
           sampling="all", ohem=None, num_scales=3, ratios=(0.5, 1.0, 2.0), init="prior", iterations=90000,
           jitter=None):
    """The paper's setting of one run (defaults: Table 1's caption and section 5's optimization paragraph)."""
    assert cfg.model.depth == depth
    assert (cfg.data.min_size, cfg.data.max_size) == (scale, max_size)
    assert cfg.data.train_min_sizes == jitter
    assert cfg.loss.cls == cls and cfg.loss.gamma == gamma and cfg.loss.alpha == alpha
    if beta is not None:
        assert cfg.loss.beta == beta
    assert cfg.loss.sampling == sampling
    if ohem:
        assert (cfg.loss.ohem_batch, cfg.loss.ohem_nms, cfg.loss.ohem_pos_fraction) == ohem
    assert cfg.anchors.num_scales == num_scales and tuple(cfg.anchors.aspect_ratios) == ratios
    assert cfg.model.cls_bias_init == init and cfg.model.prior_prob == 0.01
    # section 5, 'Optimization': SGD, lr .01 for 16 images, /10 at 60k and 80k of 90k, momentum .9, wd 1e-4.
    s = cfg.solver
    assert (s.base_lr, s.batch_size, s.momentum, s.weight_decay) == (0.01, 16, 0.9, 1e-4)
    assert s.iterations == iterations
    assert [round(f * iterations) for f in s.steps] == [round(iterations * 2 / 3), round(iterations * 8 / 9)]
    assert cfg.model.num_classes == 80 and cfg.model.fpn_channels == 256 and cfg.model.head_convs == 4
    assert cfg.anchors.sizes == [32.0, 64.0, 128.0, 256.0, 512.0]
    assert (cfg.matcher.fg_iou, cfg.matcher.bg_iou) == (0.5, 0.4)
    # section 4.1, 'Initialization': the ImageNet ResNets the paper used, Detectron's MSRA ones, with their input
    assert cfg.model.pretrained.endswith(f"resnet{depth}-msra.pth") and cfg.model.backbone_style == "caffe2"
    assert cfg.data.input_format == "bgr255" and cfg.data.pixel_mean == [102.9801, 115.9465, 122.7717]
    assert cfg.data.pixel_std == [1.0, 1.0, 1.0] and cfg.data.resize_antialias is False
    assert cfg.test.score_thresh == 0.05 and cfg.test.score_thresh_p7 == 0.0  # Detectron's, declared
    assert cfg.data.root == "data/coco" and cfg.data.val_annotations == "annotations/instances_val2017.json"


def test_table_1a_alpha_075_is_alpha_balanced_ce_r50_600_1x(paper):
    _, study = paper
    row = _row(study, "1a", "alpha=0.75")
    cfg = _cfg(study, row)
    _check(cfg, gamma=0.0, alpha=0.75)
    assert cfg.solver.steps == pytest.approx([60000 / 90000, 80000 / 90000])
    assert row["run"] == "r50-600-ce-a0.75"


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999])
def test_table_1a_rows(paper, alpha):
    _, study = paper
    _check(_cfg(study, _row(study, "1a", f"alpha={fmt(alpha)}")), gamma=0.0, alpha=alpha)


@pytest.mark.parametrize("gamma", [0, 0.1, 0.2, 0.5, 1, 2, 5])
def test_table_1b_every_gamma_has_an_alpha_grid(paper, gamma):
    scale, study = paper
    (row,) = [r for r in study.manifest["tables"]["1b"] if r["key"] == f"gamma={fmt(gamma)}"]
    assert sorted(c["alpha"] for c in row["candidates"]) == sorted(scale["grids"]["table1b_alpha"])
    for cand in row["candidates"]:
        _check(_cfg(study, cand), gamma=float(gamma), alpha=cand["alpha"])


def test_table_1b_gamma_0_candidates_are_table_1a_runs(paper):
    _, study = paper
    (row,) = [r for r in study.manifest["tables"]["1b"] if r["key"] == "gamma=0"]
    assert {c["run"] for c in row["candidates"]} <= {r["run"] for r in study.manifest["tables"]["1a"]}


@pytest.mark.parametrize(("scales", "ratios"), [(1, 1), (2, 1), (3, 1), (1, 3), (2, 3), (3, 3), (4, 3)])
def test_table_1c_anchor_rows(paper, scales, ratios):
    _, study = paper
    cfg = _cfg(study, _row(study, "1c", f"scales={scales},ratios={ratios}"))
    _check(cfg, num_scales=scales, ratios=(1.0,) if ratios == 1 else (0.5, 1.0, 2.0))


@pytest.mark.parametrize(("method", "batch", "nms", "pos"), [
    ("OHEM", 128, 0.7, None), ("OHEM", 256, 0.7, None), ("OHEM", 512, 0.7, None),
    ("OHEM", 128, 0.5, None), ("OHEM", 256, 0.5, None), ("OHEM", 512, 0.5, None),
    ("OHEM 1:3", 128, 0.5, 0.25), ("OHEM 1:3", 256, 0.5, 0.25), ("OHEM 1:3", 512, 0.5, 0.25)])
def test_table_1d_ohem_rows_are_ce_on_resnet101(paper, method, batch, nms, pos):
    _, study = paper
    cfg = _cfg(study, _row(study, "1d", f"method={method},batch={batch},nms={fmt(nms)}"))
    _check(cfg, depth=101, gamma=0.0, alpha=None, sampling="ohem", ohem=(batch, nms, pos))


def test_table_1d_fl_row_is_resnet101_600_fl(paper):
    _, study = paper
    _check(_cfg(study, _row(study, "1d", "method=FL")), depth=101)
    assert _row(study, "1d", "method=FL")["run"] == "r101-600-fl-g2-a0.25"


@pytest.mark.parametrize("depth", [50, 101])
@pytest.mark.parametrize(("scale", "max_size"), [(400, 667), (500, 833), (600, 1000), (700, 1167), (800, 1333)])
def test_table_1e_rows_and_timing(paper, depth, scale, max_size):
    _, study = paper
    row = _row(study, "1e", f"depth={depth},scale={scale}")
    _check(_cfg(study, row), depth=depth, scale=scale, max_size=max_size)
    assert set(row["timing"]) == set(row["metrics"])
    assert all(f"{row['run']}-s{s}" in study.timed for s in row["seeds"])


def test_table_2_is_resnet101_800_jitter_1_5x(paper):
    _, study = paper
    (row,) = study.manifest["tables"]["2"]
    assert row["key"] == "RetinaNet-101-800"
    _check(_cfg(study, row), depth=101, scale=800, max_size=1333, iterations=135000,
           jitter=[640, 672, 704, 736, 768, 800])


@pytest.mark.parametrize(("key", "expected"), [
    ("loss=CE", {"gamma": 0.0, "alpha": 0.75}),
    ("loss=FL,gamma=2", {}),
    ("loss=FL*,gamma=2,beta=1", {"cls": "focal_star", "gamma": 2.0, "beta": 1.0}),
    ("loss=FL*,gamma=4,beta=0", {"cls": "focal_star", "gamma": 4.0, "beta": 0.0})])
def test_table_3_rows(paper, key, expected):
    _, study = paper
    _check(_cfg(study, _row(study, "3", key)), **expected)


def test_section_5_1_init_rows(paper):
    _, study = paper
    zero, prior = (_cfg(study, _row(study, "5.1", k)) for k in ("init=zero", "init=prior"))
    _check(zero, gamma=0.0, alpha=0.5, init="zero")
    _check(prior, gamma=0.0, alpha=0.5)
    assert _row(study, "5.1", "init=prior")["run"] == _row(study, "1a", "alpha=0.5")["run"]


def test_section_5_1_keeps_the_papers_learning_strategy_against_the_scales():
    """Section 5.1 trains CE 'without any modifications to the initialization or learning strategy': a scale's larger
    lr and gradient clipping (mini's base) apply to every other run, not to Table 5.1's, which then get their own
    runs (named ``-papersgd``) instead of sharing Table 1a's alpha = .5 model."""
    scale = load_scale({"scale": "mini"}, CONFIG)
    study = build_study(scale)
    paper_solver = RunConfig().solver
    base = scale["base"]["solver"]
    assert (base["base_lr"], base["clip_grad_norm"]) != (paper_solver.base_lr, paper_solver.clip_grad_norm)
    for key in ("init=zero", "init=prior"):
        row = _row(study, "5.1", key)
        assert row["run"].endswith("-papersgd")
        for seed in row["seeds"]:
            cfg = _cfg(study, row, seed)
            assert cfg.solver.base_lr == paper_solver.base_lr and cfg.solver.clip_grad_norm is None
            assert cfg.solver.iterations == base["iterations"]  # the scale's sizes still apply
    assert _row(study, "5.1", "init=zero")["run"] == "r50-600-ce-a0.5-zinit-papersgd"
    alpha_05 = _cfg(study, _row(study, "1a", "alpha=0.5"))
    assert (alpha_05.solver.base_lr, alpha_05.solver.clip_grad_norm) == (base["base_lr"], base["clip_grad_norm"])
    assert _row(study, "1a", "alpha=0.5")["run"] == "r50-600-ce-a0.5"
    others = [cfg for rid, cfg in study.runs.items() if "papersgd" not in rid]
    assert others and all(cfg.solver.clip_grad_norm == base["clip_grad_norm"] for cfg in others)


def test_figure_4_is_the_resnet101_600_gamma2_model(paper):
    _, study = paper
    fig4 = study.manifest["figures"]["fig4"]
    _check(study.runs[f"{fig4['run']}-s{fig4['seed']}"], depth=101)
    assert fig4["run"] == _row(study, "1d", "method=FL")["run"] == _row(study, "1e", "depth=101,scale=600")["run"]
    assert fig4["samples"].endswith(".npz") and study.loss_samples == [f"{fig4['run']}-s{fig4['seed']}"]


def test_figure_7_is_an_fl_star_grid_with_alpha_025(paper):
    scale, study = paper
    points = study.manifest["figures"]["fig7"]
    assert {(p["gamma"], p["beta"]) for p in points} == {
        (g, b) for g in scale["grids"]["fig7_gamma"] for b in scale["grids"]["fig7_beta"]}
    assert {(2, 1), (4, 0)} <= {(p["gamma"], p["beta"]) for p in points}  # Table 3's settings
    for p in points:
        _check(_cfg(study, p), cls="focal_star", gamma=float(p["gamma"]), beta=float(p["beta"]), alpha=0.25)


def test_shared_models_are_trained_once(paper):
    """Table 1b's gamma=2 row, 1c's 3x3 row, 1e's 50-600 row and Table 3's FL row are one model."""
    _, study = paper
    runs = {_row(study, "1b", ("gamma=2", 0.25))["run"], _row(study, "1c", "scales=3,ratios=3")["run"],
            _row(study, "1e", "depth=50,scale=600")["run"], _row(study, "3", "loss=FL,gamma=2")["run"]}
    assert runs == {"r50-600-fl-g2-a0.25"}
    assert _row(study, "3", "loss=CE")["run"] == _row(study, "1a", "alpha=0.75")["run"]
    (fig7_point,) = [p for p in study.manifest["figures"]["fig7"] if p["key"] == "gamma=2,beta=1"]
    assert _row(study, "3", "loss=FL*,gamma=2,beta=1")["run"] == fig7_point["run"]
    assert _row(study, "5.1", "init=prior")["run"] == _row(study, "1a", "alpha=0.5")["run"]


def test_run_names_and_configs_are_one_to_one(paper):
    _, study = paper
    blobs = {json.dumps(to_dict(c), sort_keys=True) for c in study.runs.values()}
    assert len(blobs) == len(study.runs)
    # Counting the distinct models of the paper-scale study by hand: 1a: 7 alphas; 1b: 7 gammas x 7 alphas, the
    # gamma = 0 ones are 1a's (+42); 1c: 7, 3x3 is the default FL (+6); 1d: 9 OHEM + FL R101-600 (+10); 1e: 10, of
    # which 50-600 (default) and 101-600 (1d's FL) exist (+8); Table 2 (+1); Table 3: CE = 1a .75, FL = default,
    # 2 FL* (+2); 5.1: zero init (+1), prior = 1a .5; Fig 7: 4 x 5 FL*, two of them Table 3's (+18).
    assert len(study.runs) == 7 + 42 + 6 + 10 + 8 + 1 + 2 + 1 + 18


def test_run_name_examples():
    assert run_name({}) == "r50-600-fl-g2-a0.25"
    assert run_name({"loss": {"gamma": 0.0, "alpha": 0.75}}) == "r50-600-ce-a0.75"
    assert run_name({"loss": {"cls": "focal_star", "gamma": 2.0, "beta": 1.0}}) == "r50-600-fls-g2-b1-a0.25"
    assert run_name({"model": {"depth": 101}, "loss": {"gamma": 0.0, "alpha": None, "sampling": "ohem",
                                                      "ohem_batch": 128, "ohem_nms": 0.5,
                                                      "ohem_pos_fraction": 0.25}}) == "r101-600-ohem13-b128-n0.5"
    assert run_name({"anchors": {"num_scales": 1, "aspect_ratios": [1.0]}}) == "r50-600-fl-g2-a0.25-sc1-ar1"
    assert run_name({"model": {"cls_bias_init": "zero"}, "loss": {"gamma": 0.0, "alpha": 0.5}}) == \
        "r50-600-ce-a0.5-zinit"
    assert run_name({"model": {"depth": 101}, "data": {"min_size": 800, "train_min_sizes": "jitter"},
                     "solver": {"schedule": 1.5}}) == "r101-800-fl-g2-a0.25-jit-1.5x"


@pytest.mark.parametrize("value,text", [(2.0, "2"), (0, "0"), (0.75, "0.75"), (0.1, "0.1"), (1.5, "1.5"),
                                        (0.999, "0.999")])
def test_number_format_of_keys(value, text):
    assert fmt(value) == text


def test_mini_maps_depth_and_scale_and_keeps_paper_names():
    scale = load_scale({"scale": "mini"}, CONFIG)
    study = build_study(scale)
    # Table 2 at mini's deep_depth 50, the largest scale of its cut Table 1e grid (600) and the paper's 1.5x
    cfg = study.runs["r50-600-fl-g2-a0.25-jit-1.5x-s0"]
    assert cfg.model.depth == 18 and cfg.data.min_size == 128
    assert cfg.data.train_min_sizes == scale["maps"]["jitter"] and max(cfg.data.train_min_sizes) == 128
    assert cfg.solver.iterations == 1.5 * scale["base"]["solver"]["iterations"] == 1500
    assert cfg.solver.steps == [0.8, 0.93]
    assert study.runs["r101-600-fl-g2-a0.25-s0"].model.depth == 34
    assert study.runs["r101-600-fl-g2-a0.25-s0"].model.pretrained == "work/mini/weights/resnet34-pretrain.pth"
    assert study.runs["r50-600-fl-g2-a0.25-s0"].model.pretrained == "work/mini/weights/resnet18-pretrain.pth"
    ohem = study.runs["r50-600-ohem-b128-n0.5-s0"].loss
    assert ohem.ohem_batch == next(e["ours"] for e in scale["maps"]["ohem_batch"] if e["paper"] == 128)


def test_mini_headline_contrasts_cross_two_seeds_with_two_pretrainings():
    """FL vs alpha-CE, FL vs OHEM and FL* vs FL over 2 seeds on each of 2 pretrainings (4 runs); Table 5.1 (a
    divergence against ~22 AP) and the sweeps at 1 seed on the first pretraining."""
    study = build_study(load_scale({"scale": "mini"}, CONFIG))
    t = study.manifest["tables"]
    for table, key, runs in [("3", "loss=CE", 4), ("3", "loss=FL,gamma=2", 4), ("3", "loss=FL*,gamma=2,beta=1", 4),
                             ("1d", "method=FL", 4), ("1d", "method=OHEM,batch=128,nms=0.5", 4),
                             ("1a", "alpha=0.75", 4), ("1a", "alpha=0.1", 1), ("1c", "scales=4,ratios=3", 1),
                             ("5.1", "init=zero", 1), ("5.1", "init=prior", 1)]:
        (row,) = [r for r in t[table] if r["key"] == key]
        assert len(row["metrics"]) == runs, (table, key)
        assert row.get("pretrainings", [0]) == ([0, 1] if runs == 4 else [0]), (table, key)
    assert len(study.runs) == 34


@pytest.mark.parametrize("name", ["paper", "mini", "smoke"])
def test_scales_validate_and_declare_every_override(name):
    scale = load_scale({"scale": name}, CONFIG)
    jsonschema.validate(scale, SCHEMA)
    assert undeclared_overrides(scale) == []
    study = build_study(scale)
    for rid in study.runs:  # the config file leaves the runtime fields to the train rule's --set options
        content = study.run_config(rid)
        for field in RUNTIME_FIELDS:
            with pytest.raises(KeyError):
                value(content, field)
        assert from_dict(merge(content, parse_overrides(runtime_options(study.runs[rid])))) == study.runs[rid]


def test_undeclared_override_is_reported():
    scale = load_scale({"scale": "mini"}, CONFIG)
    scale = copy.deepcopy(scale)
    scale["base"]["loss"] = {"smooth_l1_beta": 0.2}
    assert undeclared_overrides(scale) == ["loss.smooth_l1_beta"]


def test_manifest_has_every_table_and_figure_with_paths():
    study = build_study(load_scale({"scale": "smoke"}, CONFIG))
    m = study.manifest
    assert set(m["tables"]) == {"1a", "1b", "1c", "1d", "1e", "2", "3", "5.1"}
    assert {"fig1", "fig2", "fig4", "fig5", "fig6", "fig7"} <= set(m["figures"])
    assert m["deviations"] and all(set(d) == {"field", "paper", "ours", "reason"} for d in m["deviations"])
    for rid, entry in m["runs"].items():
        assert entry["dir"] == f"work/smoke/runs/{rid}" and entry["result"].endswith("result.json")
    assert m["tables"]["1a"][0]["metrics"]["0"].startswith("work/smoke/eval/")
    json.dumps(m)


def test_bad_grid_value_names_the_field():
    scale = copy.deepcopy(load_scale({"scale": "smoke"}, CONFIG))
    scale["grids"]["table1a_alpha"] = [1.5]
    with pytest.raises(ConfigError, match="loss.alpha"):
        build_study(scale)


def test_unmapped_paper_scale_names_the_map():
    scale = copy.deepcopy(load_scale({"scale": "smoke"}, CONFIG))
    scale["grids"]["table1e_scale"] = [600, 900]
    with pytest.raises(StudyError, match="maps.image_scale"):
        build_study(scale)


def test_collapsing_map_is_refused():
    """Two table rows that resolve to one config under two names would train the same model twice."""
    scale = copy.deepcopy(load_scale({"scale": "smoke"}, CONFIG))
    scale["maps"]["depth"] = [{"paper": 50, "ours": 18}, {"paper": 101, "ours": 18}]
    with pytest.raises(StudyError, match="same config under two names"):
        build_study(scale)


def test_unknown_scale_lists_the_known_ones():
    with pytest.raises(StudyError, match="have: mini, paper, smoke"):
        load_scale({"scale": "huge"}, CONFIG)


@pytest.mark.parametrize(("content", "message"), [
    (b"", "empty scale config"),
    (b"# nothing yet\n", "empty scale config"),
    (b"- scale\n", "<root>: expected a mapping of fields, got list"),
    (b"scale: mine  # caf\xe9\n", r"scale config is not UTF-8 \(byte 0xe9 on line 1"),
])
def test_unusable_scale_file_is_refused_with_its_name(tmp_path, content, message):
    (tmp_path / "mine.yaml").write_bytes(content)
    with pytest.raises(StudyError, match=f"^{re.escape(str(tmp_path / 'mine.yaml'))}: {message}"):
        load_scale({"scale": "mine"}, tmp_path)


def test_command_line_keys_override_the_scale_file():
    scale = load_scale({"scale": "paper", "dataset": {"source": "coco", "root": "/datasets/coco"}}, CONFIG)
    assert resolve(scale, {}, 0).data.root == "/datasets/coco"
    assert scale["grids"] == load_scale({"scale": "paper"}, CONFIG)["grids"]

def test_paper_scale_declares_what_still_differs_and_its_report_prints_it():
    """The paper scale runs Detectron's MSRA weights (nothing to declare) and declares Detectron's P7 threshold,
    which the report's deviation table (built from the manifest) prints; torchvision's weights there would be an
    undeclared deviation."""
    from analysis.report import deviations_section
    from analysis.study_io import Study

    scale = load_scale({"scale": "paper"}, CONFIG)
    manifest = build_study(scale).manifest
    fields = [d["field"] for d in manifest["deviations"]]
    assert "test.score_thresh_p7" in fields and "model.pretrained" not in fields
    section = deviations_section(Study(path=Path("study.json"), data=manifest))
    row = next(line for line in section.splitlines() if line.startswith("| test.score_thresh_p7 |"))
    assert "no threshold (0.0) on P7" in row and "Detectron" in row
    torchvision = copy.deepcopy(scale)
    torchvision["weights"]["source"] = "torchvision"
    assert undeclared_overrides(torchvision) == ["model.pretrained"]
    cfg = build_study(torchvision).runs[next(iter(build_study(torchvision).runs))]
    assert cfg.model.backbone_style == "torchvision" and cfg.data.input_format == "rgb"
    assert cfg.model.pretrained.endswith("-imagenet1k-v1.pth")


def _with_pretrainings(scale_name: str, pretrainings: list[int], **seeds) -> dict:
    scale = copy.deepcopy(load_scale({"scale": scale_name}, CONFIG))
    scale["seeds"] = {**scale["seeds"], **seeds, "pretrainings": pretrainings}
    return scale


def test_headline_rows_cross_pretraining_replicas_with_their_seeds():
    """Issue 18 item 5: a headline row runs every headline seed on each pretraining replica; replica k > 0 starts
    from its own weights file and has its own run ids and manifest keys; the other rows keep pretraining 0."""
    base = build_study(load_scale({"scale": "mini"}, CONFIG))
    scale = _with_pretrainings("mini", [0, 1], headline=[0, 1])
    study = build_study(scale)
    (ce,) = [r for r in study.manifest["tables"]["3"] if r["key"] == "loss=CE"]
    assert ce["seeds"] == [0, 1] and ce["pretrainings"] == [0, 1]
    assert ce["runs"] == {"0": "r50-600-ce-a0.75-s0", "1": "r50-600-ce-a0.75-s1",
                          "p1-s0": "r50-600-ce-a0.75-p1-s0", "p1-s1": "r50-600-ce-a0.75-p1-s1"}
    assert ce["metrics"]["p1-s1"] == "work/mini/eval/r50-600-ce-a0.75-p1-s1/metrics.json"
    p0, p1 = study.runs["r50-600-ce-a0.75-s1"], study.runs["r50-600-ce-a0.75-p1-s1"]
    assert p0.model.pretrained == "work/mini/weights/resnet18-pretrain.pth"
    assert p1.model.pretrained == "work/mini/weights/resnet18-pretrain-p1.pth"
    assert to_dict(p0) == merge(to_dict(p1), {"model": {"pretrained": p0.model.pretrained}})  # nothing else differs
    # a sweep row (1 seed, not headline) stays on the first pretraining, under the same id as without replicas
    (g5,) = [c for r in study.manifest["tables"]["1b"] for c in r["candidates"] if c["key"] == "gamma=5,alpha=0.25"]
    assert "pretrainings" not in g5 and list(g5["metrics"]) == ["0"]
    assert {rid for rid in study.runs if "-p1-" in rid} == {
        f"{name}-p1-s{s}" for name in ("r50-600-ce-a0.75", "r50-600-fl-g2-a0.25", "r50-600-fls-g2-b1-a0.25",
                                       "r50-600-ohem-b128-n0.5") for s in (0, 1)}
    assert set(base.runs) - {rid for rid in base.runs if rid.endswith("-s2")} <= set(study.runs)
    assert study.manifest["seed_sets"]["pretrainings"] == [0, 1]


@pytest.mark.parametrize(("scale_name", "pretrainings", "message"), [
    ("paper", [0, 1], "seeds.pretrainings: [0, 1] needs weights.source 'pretrain'"),
    ("mini", [0, 0], "seeds.pretrainings: [0, 0] must be distinct replica numbers >= 0"),
    ("mini", [0, -1], "seeds.pretrainings: [0, -1] must be distinct replica numbers >= 0"),
])
def test_pretraining_replicas_need_pretrained_weights(scale_name, pretrainings, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        build_study(_with_pretrainings(scale_name, pretrainings))

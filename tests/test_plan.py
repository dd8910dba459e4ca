"""python -m retinanet plan: the runs each target needs, their GPU-hours and the wall time on N GPUs.

Run counts are the study's (tests/test_workflow.py checks that Snakemake's dry run has one train job per study run
at every scale): paper 95, mini 28, smoke 17.
"""

from __future__ import annotations

import math

import pytest

from retinanet.__main__ import main
from retinanet.tools.plan import (
    PUBLISHED,
    ImageTime,
    PlanError,
    load_scale_config,
    lpt_makespan,
    make_plan,
    rms,
    select,
)
from workflow.study import build_study

FAKE = {d: ImageTime(d, 0.01 * d, 100.0, "test") for d in (18, 34, 50, 101)}
"""Seconds per image growing with depth, at a 100 px reference side."""


@pytest.fixture(scope="module")
def paper():
    return load_scale_config("paper")


@pytest.mark.parametrize(("scale", "runs"), [("smoke", 17), ("mini", 34), ("paper", 95)])
def test_plan_prices_every_run_of_the_study_once(scale, runs):
    cfg = load_scale_config(scale)
    plan = make_plan(cfg, times=FAKE)
    assert len(plan.costs) == runs == len(build_study(cfg).runs)
    assert set(plan.costs) == set(build_study(cfg).runs)
    assert plan.total_gpu_seconds() == pytest.approx(sum(c.gpu_seconds for c in plan.costs.values()))
    # each table alone pays for all its runs; the shares split shared runs and add up to the total
    assert sum(plan.share_gpu_seconds(t) for t in plan.targets) == pytest.approx(plan.total_gpu_seconds())
    assert sum(plan.alone_gpu_seconds(t) for t in plan.targets) > plan.total_gpu_seconds()  # shared runs exist
    for t in plan.targets:
        assert plan.share_gpu_seconds(t) <= plan.alone_gpu_seconds(t) + 1e-9


def test_published_figure_scaled_by_image_area(paper):
    plan = make_plan(paper)
    side = rms([640, 672, 704, 736, 768, 800])
    assert side == pytest.approx(722.0, abs=0.5)
    r50 = plan.costs["r50-600-fl-g2-a0.25-s0"]
    assert r50.gpu_seconds == pytest.approx(0.205 * 8 / 16 * (600 / side) ** 2 * 16 * 90000)
    assert r50.s_per_iter(8) == pytest.approx(0.205 * (600 / side) ** 2)
    # Table 2: ResNet-101 with detectron2's own jitter (the reference's mean area) and 1.5x the iterations
    (t2,) = plan.targets["2"]
    assert plan.costs[t2].gpu_seconds == pytest.approx(0.291 * 8 * 135000)  # 8 GPUs, 0.291 s/iter
    assert PUBLISHED[50].source.startswith("detectron2 MODEL_ZOO.md, retinanet_R_50_FPN_1x: train time 0.205 s/iter")


def test_small_scales_need_a_measurement():
    with pytest.raises(PlanError, match=r"no iteration time for ResNet-18 .*use --measure"):
        make_plan(load_scale_config("mini"))


def test_targets_and_shared_runs(paper):
    configs, targets = select(paper)
    assert len(targets["1a"]) == 7 and len(targets["1b"]) == 49 and len(targets["3"]) == 4
    assert targets["fig2"] == targets["1e"]
    assert targets["fig1"] == targets["fig5"] == targets["fig6"] == []
    assert set(targets["3"]) <= set(targets["fig7"])  # Fig. 7 reads Table 3's FL run, as its rule does
    assert set(targets["1a"]) <= set(targets["1b"])  # gamma = 0 candidates are Table 1a's runs
    plan = make_plan(paper, ["1a", "1b", "3"], FAKE)
    # 1b's 49 runs hold 1a's and Table 3's CE and FL; Table 3 adds its two FL* runs
    assert len(plan.costs) == len(set(targets["1a"]) | set(targets["1b"]) | set(targets["3"])) == 51
    shared = "r50-600-ce-a0.75-s0"  # Table 1a's alpha .75 row = Table 1b's gamma 0 candidate = Table 3's CE
    assert plan.users(shared) == ["1a", "1b", "3"]
    with pytest.raises(PlanError, match="unknown target 'table_9'"):
        make_plan(paper, ["table_9"], FAKE)


def test_lpt_schedule():
    assert lpt_makespan([1.0] * 5, 2) == 3.0  # ceil(5 / 2) rounds of equal runs
    assert lpt_makespan([3.0, 3.0, 2.0, 2.0, 2.0], 2) == 7.0  # LPT, 4/3-optimal (optimum 6)
    assert lpt_makespan([4.0], 3) == 4.0
    assert lpt_makespan([], 2) == 0.0


def test_wall_time_at_n_gpus(paper):
    plan8 = make_plan(paper, ["3"], FAKE, gpus=8)
    total = plan8.total_gpu_seconds()
    assert plan8.slots == 1 and plan8.wall_seconds() == pytest.approx(total / 8)  # one 8-GPU run at a time
    plan4 = make_plan(paper, ["3"], FAKE, gpus=4)  # each run on 4 GPUs (gradient accumulation), same GPU-hours
    assert plan4.run_gpus == 4 and plan4.total_gpu_seconds() == pytest.approx(total)
    assert plan4.wall_seconds() == pytest.approx(total / 4)
    plan32 = make_plan(paper, ["3"], FAKE, gpus=32)  # Table 3's 4 equal runs side by side
    assert plan32.slots == 4 and plan32.wall_seconds() == pytest.approx(total / 32)
    plan20 = make_plan(paper, ["3"], FAKE, gpus=20)  # 2 slots of 8 (4 GPUs idle): 2 rounds
    assert plan20.slots == 2 and plan20.wall_seconds() == pytest.approx(math.ceil(4 / 2) * total / 4 / 8)


def test_cli_measures_and_prints_markdown(capsys):
    code = main(["plan", "--scale", "smoke", "--targets", "3", "--measure", "--device", "cpu", "--steps", "1",
                 "--format", "md"])
    out = capsys.readouterr().out
    assert code == 0
    assert "ResNet-18:" in out and "measured on" in out
    lines = out.splitlines()
    assert "| target | Snakemake target | runs | shared | GPU-h alone | GPU-h share | wall at 8 GPUs |" in lines
    assert any(line.startswith("| 3 | `results/smoke/tables/table_3.md` | 4 |") for line in lines)
    assert any(line.startswith("| total |  | 4 |") for line in lines)
    assert sum(line.startswith("| r50-600-") for line in lines) == 4


def test_cli_errors_name_the_target(capsys):
    assert main(["plan", "--targets", "9z", "--brief"]) == 2
    assert "unknown target '9z'" in capsys.readouterr().err

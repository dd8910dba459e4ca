"""Solver: batch plan (accumulate / scale_lr), the paper's lr schedule with Detectron's warmup."""

from __future__ import annotations

import pytest
import torch

from retinanet.config import ConfigError, SolverConfig
from retinanet.solver import WarmupMultiStepSchedule, build_optimizer, plan_batch


@pytest.mark.parametrize(("world", "ipp", "steps"), [(1, 2, 8), (2, 2, 4), (8, 2, 1), (4, 4, 1), (1, 16, 1)])
def test_accumulate_keeps_the_paper_batch(world, ipp, steps):
    plan = plan_batch(SolverConfig(images_per_process=ipp), world)
    assert plan.accumulation_steps == steps and plan.effective_batch == 16
    assert plan.accumulation_steps * world * ipp == 16
    assert plan.lr == 0.01  # 16 images per step: the paper's lr


def test_accumulate_refuses_an_uneven_split():
    with pytest.raises(ConfigError, match="solver.batch_size: 16 is not a multiple of world size 3"):
        plan_batch(SolverConfig(), 3)


def test_scale_lr_is_linear_in_the_actual_batch():
    plan = plan_batch(SolverConfig(batch_policy="scale_lr", images_per_process=2), 2)
    assert plan.accumulation_steps == 1 and plan.effective_batch == 4 and plan.lr == pytest.approx(0.01 * 4 / 16)
    assert plan_batch(SolverConfig(batch_size=32), 8).lr == pytest.approx(0.02)  # linear scaling rule


def test_paper_schedule_values():
    """lr 0.01, /10 at 60k and 80k of 90k, linear warmup over 500 iterations from lr / 3 (Detectron)."""
    sched = WarmupMultiStepSchedule(SolverConfig(), 0.01)
    assert sched.milestones == [60000, 80000]
    assert sched(0) == pytest.approx(0.01 / 3)
    assert sched(250) == pytest.approx(0.01 * (1 / 3 * 0.5 + 0.5))
    assert sched(500) == sched(59999) == pytest.approx(0.01)
    assert sched(60000) == sched(79999) == pytest.approx(0.001)
    assert sched(80000) == sched(89999) == pytest.approx(0.0001)
    lrs = [sched(i) for i in range(501)]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))


def test_steps_scale_with_schedule_length_and_state_is_checked():
    cfg = SolverConfig(iterations=900, warmup_iters=0)
    sched = WarmupMultiStepSchedule(cfg, 0.02)
    assert sched.milestones == [600, 800] and sched(0) == 0.02 and sched(600) == pytest.approx(0.002)
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    assert sched.apply(opt, 800) == pytest.approx(0.0002) and opt.param_groups[0]["lr"] == pytest.approx(0.0002)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    sched.load_state_dict(sched.state_dict())
    with pytest.raises(ConfigError, match="schedule"):
        WarmupMultiStepSchedule(SolverConfig(iterations=1000), 0.02).load_state_dict(sched.state_dict())


def test_optimizer_update_is_sgd_with_momentum_and_weight_decay():
    """Three steps of our (fused) SGD against the update written out: v = m v + (g + wd w); w -= lr v."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, SolverConfig(base_lr=0.1))
    assert opt.defaults["fused"]
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(3)]
    expected, velocity = [w.clone() for w in w0], [None] * len(w0)
    for step in grads:
        for p, g in zip(model.parameters(), step, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(step):
            d = g + 1e-4 * expected[i]
            velocity[i] = d if velocity[i] is None else 0.9 * velocity[i] + d
            expected[i] = expected[i] - 0.1 * velocity[i]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)

"""Solver: batch plan (accumulate / scale_lr), the paper's lr schedule with Detectron's warmup, Detectron's bias
treatment (2x lr, no weight decay)."""

from __future__ import annotations

import pytest
import torch

from retinanet.config import ConfigError, SolverConfig, from_dict
from retinanet.engine.solver import WarmupMultiStepSchedule, build_optimizer, param_groups, plan_batch


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
    """Three steps of our (fused) SGD against the update written out: v = m v + (g + wd w); w -= lr v for the
    weight; the bias at 2 lr and wd 0 (Detectron)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer(model, SolverConfig(base_lr=0.1))
    assert opt.defaults["fused"]
    lrs, wds = (0.1, 0.2), (1e-4, 0.0)  # weight, bias
    grads = [[torch.randn_like(p) for p in model.parameters()] for _ in range(3)]
    expected, velocity = [w.clone() for w in w0], [None] * len(w0)
    for step in grads:
        for p, g in zip(model.parameters(), step, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(step):
            d = g + wds[i] * expected[i]
            velocity[i] = d if velocity[i] is None else 0.9 * velocity[i] + d
            expected[i] = expected[i] - lrs[i] * velocity[i]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7)


class _Tiny(torch.nn.Module):
    """A conv with a bias, a linear layer with a bias, and a frozen bias (as frozen BN's shift)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.fc = torch.nn.Linear(3, 2)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.fc(self.conv(x).mean((2, 3))))


def test_biases_train_at_twice_the_lr_without_weight_decay():
    """Detectron's optimizer: bias -= 2 lr g (no decay term); weight -= lr (g + wd w). First step, so the momentum
    buffer is the step's direction itself. A frozen bias is in no group and does not move."""
    torch.manual_seed(0)
    model = _Tiny()
    cfg = SolverConfig(base_lr=0.1, weight_decay=0.01, warmup_iters=0)
    opt = build_optimizer(model, cfg)
    assert WarmupMultiStepSchedule(cfg, cfg.base_lr).apply(opt, 0) == pytest.approx(0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 2, 5, 5)).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    opt.step()
    after = dict(model.named_parameters())
    for name in ("conv.bias", "fc.bias"):
        torch.testing.assert_close(after[name].detach(), before[name] - 2 * 0.1 * grads[name], rtol=1e-6, atol=1e-7)
    for name in ("conv.weight", "fc.weight", "frozen.weight"):
        expected = before[name] - 0.1 * (grads[name] + 0.01 * before[name])
        torch.testing.assert_close(after[name].detach(), expected, rtol=1e-6, atol=1e-7)
    assert torch.equal(after["frozen.bias"], before["frozen.bias"])
    assert all(p is not model.frozen.bias for g in opt.param_groups for p in g["params"])


def test_schedule_keeps_the_bias_lr_at_twice_the_weight_lr():
    """Through warmup and after each step: each group's lr = scheduled lr x its factor."""
    cfg = SolverConfig()
    opt = build_optimizer(_Tiny(), cfg)
    sched = WarmupMultiStepSchedule(cfg, 0.01)
    assert [g["lr_factor"] for g in opt.param_groups] == [1.0, 2.0]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    for it, lr in ((250, 0.01 * (1 / 3 * 0.5 + 0.5)), (1000, 0.01), (60000, 0.001), (85000, 0.0001)):
        assert sched.apply(opt, it) == pytest.approx(lr)
        weights, biases = opt.param_groups
        assert weights["lr"] == pytest.approx(lr) and biases["lr"] == pytest.approx(2 * lr)


def test_turning_the_bias_options_off_gives_one_group():
    """bias_lr_factor 1 and bias_weight_decay true: every trainable parameter at lr with weight decay, as before."""
    model = _Tiny()
    off = SolverConfig(bias_lr_factor=1.0, bias_weight_decay=True)
    (group,) = param_groups(model, off)
    assert group["weight_decay"] == 1e-4 and group["lr_factor"] == 1.0
    assert group["params"] == [p for p in model.parameters() if p.requires_grad]
    (group,) = build_optimizer(model, off).param_groups
    assert group["lr"] == 0.01
    # each option alone still separates the biases
    assert [g["lr_factor"] for g in param_groups(model, SolverConfig(bias_lr_factor=1.0))] == [1.0, 1.0]
    assert [g["weight_decay"] for g in param_groups(model, SolverConfig(bias_weight_decay=True))] == [1e-4, 1e-4]


@pytest.mark.parametrize(("solver", "message"), [
    ({"bias_lr_factor": -1}, "solver.bias_lr_factor: -1.0 is outside"),
    ({"bias_weight_decay": "no"}, "solver.bias_weight_decay: expected true/false"),
])
def test_bias_options_are_validated(solver, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"solver": solver})

"""Classification and box losses against exact references and the paper's equations (section 3, appendices A-B)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from retinanet.config import LossConfig
from retinanet.modeling import focal_kernels as losses
from retinanet.modeling.losses import (
    build_box_loss,
    build_classification_loss,
    focal_loss,
    focal_star_loss,
    l1_loss,
    smooth_l1_loss,
)

GAMMAS = [0.0, 0.1, 0.5, 1.0, 2.0, 5.0]
ALPHAS = [None, 0.25, 0.75]


def _data(n: int = 2000, scale: float = 4.0, dtype: torch.dtype = torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.rand(n, generator=g) < 0.3).to(dtype)
    return x, t


def _value_and_grad(fn, x: torch.Tensor, t: torch.Tensor, upstream: torch.Tensor | None = None):
    x = x.clone().requires_grad_()
    loss = fn(x, t)
    (loss * (torch.ones_like(loss) if upstream is None else upstream)).sum().backward()
    return loss.detach(), x.grad


def _alpha_t(t: torch.Tensor, alpha: float | None) -> torch.Tensor:
    return torch.ones_like(t) if alpha is None else alpha * t + (1 - alpha) * (1 - t)


def _ce(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """CE (eq. 1) = -log p_t, to float64 relative precision (F.binary_cross_entropy_with_logits is only
    absolutely precise: it loses the relative precision of easy examples' tiny losses)."""
    return -F.logsigmoid((2 * t - 1) * x)


def _naive_fl(x: torch.Tensor, t: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    """Eq. 5 written literally (float64, for |x| where sigmoid does not saturate)."""
    p = torch.sigmoid(x)
    p_t = torch.where(t > 0, p, 1 - p)
    return -_alpha_t(t, alpha) * (1 - p_t) ** gamma * torch.log(p_t)


def _eq10(x: torch.Tensor, t: torch.Tensor, gamma: float, alpha: float | None) -> torch.Tensor:
    """Appendix B, eq. 10 (times alpha_t): dFL/dx = y (1-p_t)^g (g p_t log(p_t) + p_t - 1), with 1 - p_t and
    log(p_t) evaluated as sigmoid(-x_t) and logsigmoid(x_t) so that the reference itself does not cancel."""
    y = 2 * t - 1
    p_t, q = torch.sigmoid(y * x), torch.sigmoid(-y * x)
    return _alpha_t(t, alpha) * y * q**gamma * (gamma * p_t * F.logsigmoid(y * x) - q)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_matches_torchvision_value_and_gradient(gamma: float, alpha: float | None) -> None:
    x, t = _data()
    w = torch.rand_like(x)
    ours, ours_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=alpha), x, t, w)
    tv_alpha = -1 if alpha is None else alpha  # torchvision's "no weighting" is alpha < 0
    ref, ref_grad = _value_and_grad(
        lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, alpha=tv_alpha, gamma=gamma, reduction="none"), x, t, w)
    finite = torch.isfinite(ref_grad)
    assert finite.float().mean() > 0.99
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours_grad[finite], ref_grad[finite], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_matches_torchvision_float32(gamma: float) -> None:
    x, t = _data(dtype=torch.float32, scale=3.0)
    ours, ours_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=0.25), x, t)
    ref, ref_grad = _value_and_grad(
        lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, alpha=0.25, gamma=gamma, reduction="none"), x, t)
    assert ours.dtype == torch.float32 and ours_grad.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-5, atol=1e-6)
    # against the float64 truth ours is accurate relatively (torchvision's float32 CE of easy examples is not)
    truth, truth_grad = _value_and_grad(
        lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, alpha=0.25, gamma=gamma, reduction="none"),
        x.double(), t.double())
    torch.testing.assert_close(ours, truth.float(), rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(ours_grad, truth_grad.float(), rtol=1e-5, atol=1e-30)


def test_gamma0_no_alpha_is_binary_cross_entropy() -> None:
    """gamma = 0, alpha = None is CE (eq. 1), in value and gradient (eq. 9), also far into the tails."""
    x, t = _data(scale=30.0)
    ours, ours_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=0.0, alpha=None), x, t)
    ref, ref_grad = _value_and_grad(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"), x, t)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-14)  # BCE is only absolutely precise in the tails
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ours, _ce(x, t), rtol=1e-14, atol=0)
    y = 2 * t - 1
    torch.testing.assert_close(ours_grad, -y * torch.sigmoid(-y * x), rtol=1e-14, atol=0)  # eq. 9: y (p_t - 1)


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.75])
def test_gamma0_is_alpha_balanced_cross_entropy(alpha: float) -> None:
    x, t = _data(scale=10.0)
    torch.testing.assert_close(focal_loss(x, t, gamma=0.0, alpha=alpha), _alpha_t(t, alpha) * _ce(x, t))  # eq. 3


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_focal_is_modulated_cross_entropy(gamma: float, alpha: float | None) -> None:
    """FL <= alpha_t CE elementwise, and FL / CE == alpha_t (1 - p_t)^gamma (eq. 3-5)."""
    x, t = _data(scale=8.0)
    fl = focal_loss(x, t, gamma=gamma, alpha=alpha)
    ce = _ce(x, t)
    a_t = _alpha_t(t, alpha)
    assert torch.all(fl <= a_t * ce * (1 + 1e-15))
    one_minus_p_t = torch.sigmoid(-(2 * t - 1) * x)
    torch.testing.assert_close(fl / ce, a_t * one_minus_p_t**gamma, rtol=1e-12, atol=0)


def test_paper_examples_of_down_weighting() -> None:
    """Section 3.2: with gamma = 2, p_t = 0.9 has 100x lower loss than CE, p_t ~ 0.968 1000x; p_t <= .5 at most 4x."""
    p_t = torch.tensor([0.9, 0.968, 0.5, 0.3, 0.01], dtype=torch.float64)
    x = torch.log(p_t / (1 - p_t))  # logits of target-1 examples with these p_t
    t = torch.ones_like(x)
    ratio = focal_loss(x, t, gamma=2.0, alpha=None) / focal_loss(x, t, gamma=0.0, alpha=None)
    torch.testing.assert_close(ratio[0], torch.tensor(0.01, dtype=torch.float64))
    assert 1 / ratio[1] == pytest.approx(1000, rel=0.03)
    assert torch.all(1 / ratio[2:] <= 4 + 1e-9)


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_gradient_is_appendix_b_eq10(gamma: float, alpha: float | None) -> None:
    """Our gradient equals eq. 10 times alpha_t (float64) and float64 autograd through the literal eq. 5."""
    x, t = _data(scale=5.0)
    _, grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=alpha), x, t)
    torch.testing.assert_close(grad, _eq10(x, t, gamma, alpha), rtol=1e-10, atol=1e-15)
    _, autograd = _value_and_grad(lambda a, b: _naive_fl(a, b, gamma, alpha), x, t)
    torch.testing.assert_close(grad, autograd, rtol=1e-10, atol=1e-15)
    # float32 logits: the same closed form, to float32 accuracy
    _, grad32 = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=alpha), x.float(), t.float())
    torch.testing.assert_close(grad32, _eq10(x.float().double(), t, gamma, alpha).float(), rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_gradcheck(gamma: float, alpha: float | None) -> None:
    x, t = _data(n=40, scale=3.0)
    assert torch.autograd.gradcheck(lambda a: focal_loss(a, t, gamma=gamma, alpha=alpha), (x.requires_grad_(),))


@pytest.mark.parametrize("gamma", [0.1, 0.2, 0.5])
def test_finite_gradient_for_small_gamma_at_large_logits(gamma: float) -> None:
    """Table 1b's gamma in (0, 1): finite loss and gradient at |x| up to 100 in float32 (and the limits of eq. 10),
    where autograd through (1 - p_t)^gamma (torchvision) gives NaN: d/dp (1-p)^g = -g (1-p)^(g-1) = inf at p_t = 1."""
    x = torch.tensor([-100.0, -50.0, -20.0, -17.0, 17.0, 20.0, 50.0, 100.0]).repeat(2)
    t = torch.cat([torch.zeros(8), torch.ones(8)])
    loss, grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=0.25), x, t)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    y, a_t = 2 * t - 1, _alpha_t(t, 0.25)
    easy = y * x >= 50  # p_t -> 1: gradient -> 0
    hard = y * x <= -50  # p_t -> 0: gradient -> -y alpha_t (eq. 10)
    torch.testing.assert_close(grad[easy], torch.zeros_like(grad[easy]), rtol=0, atol=1e-8)
    torch.testing.assert_close(grad[hard], -(y * a_t)[hard])
    torch.testing.assert_close(grad, _eq10(x.double(), t.double(), gamma, 0.25).float(), rtol=1e-5, atol=1e-30)
    _, tv_grad = _value_and_grad(
        lambda a, b: torchvision.ops.sigmoid_focal_loss(a, b, alpha=0.25, gamma=gamma, reduction="none"), x, t)
    assert torch.isnan(tv_grad).any()  # why focal_loss has its own backward


def test_loss_is_finite_and_exact_in_the_tails() -> None:
    """CE of very easy examples keeps relative precision (log1p form); hard examples' loss is ~|x|."""
    x = torch.tensor([-80.0, -30.0, 30.0, 80.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    ce = focal_loss(x, t, gamma=0.0, alpha=None)
    torch.testing.assert_close(ce, torch.exp(-x.abs()), rtol=1e-12, atol=0)
    for dtype in (torch.float32, torch.float64):
        hard = focal_loss(torch.tensor([80.0, -80.0], dtype=dtype), torch.tensor([0.0, 1.0], dtype=dtype),
                          gamma=0.5, alpha=None)
        torch.testing.assert_close(hard, torch.tensor([80.0, 80.0], dtype=dtype))


def test_chunking_is_invisible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk boundaries (tiny chunks here) change nothing; shapes, non-contiguous input and empty input work."""
    x, t = _data(n=3 * 5 * 7)
    x, t = x.reshape(3, 5, 7), t.reshape(3, 5, 7)
    whole, whole_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    monkeypatch.setattr(losses, "_CHUNK_CPU", 4)
    chunked, chunked_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    assert chunked.shape == (3, 5, 7)
    # only the last-bit rounding of vectorized vs scalar tails differs
    torch.testing.assert_close(chunked, whole, rtol=1e-15, atol=0)
    torch.testing.assert_close(chunked_grad, whole_grad, rtol=1e-15, atol=0)
    threads = torch.get_num_threads()
    try:  # chunks spread over worker threads
        torch.set_num_threads(3)
        threaded, threaded_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    finally:
        torch.set_num_threads(threads)
    # more threads make larger chunks (_CHUNK_CPU per thread), so other elements fall in scalar tails: on a CPU
    # whose vectors are narrower than a chunk (AVX2's 8 float64 against 12 here) that moves the last bit too
    torch.testing.assert_close(threaded, chunked, rtol=1e-15, atol=0)
    torch.testing.assert_close(threaded_grad, chunked_grad, rtol=1e-15, atol=0)
    xt, tt = x.transpose(0, 2), t.transpose(0, 2)
    torch.testing.assert_close(focal_loss(xt, tt, gamma=2.0, alpha=0.25), whole.transpose(0, 2))
    assert focal_loss(torch.zeros(0, 80), torch.zeros(0, 80), gamma=2.0, alpha=0.25).shape == (0, 80)


def _compiler_works() -> bool:
    try:
        torch.compile(lambda a: a + 1, fullgraph=True)(torch.zeros(2))
        return True
    except Exception:  # noqa: BLE001 - no C++ compiler on this machine
        return False


@pytest.mark.skipif(not _compiler_works(), reason="torch.compile has no working C++ compiler here")
@pytest.mark.skipif(not losses._vector_isa(), reason="Inductor has no vector ISA here (e.g. ATEN_CPU_CAPABILITY="
                    "default): paper-sized inputs take the eager chunks, tested with the fallbacks below")
@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, None), (0.0, 0.75), (5.0, 0.5), (2.0, 0.25)])
def test_compiled_one_pass_kernel_on_paper_sized_inputs(gamma: float, alpha: float | None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Float32 CPU inputs of >= 2^20 elements (paper scale: ~100k anchors x 80 classes) take the compiled kernel:
    value and eq. 10 gradient as accurate as the eager kernel against the float64 truth, for every (gamma, alpha)
    (one compiled graph serves them all: the parameters are tensor inputs), on a non-contiguous input too."""
    calls = []
    real = losses._focal_compiled
    monkeypatch.setattr(losses, "_focal_compiled", lambda *a, **k: calls.append(out := real(*a, **k)) or out)
    x, t = _data(n=losses._COMPILE_MIN_ELEMENTS, dtype=torch.float32, scale=6.0, seed=1)
    x, t = x.reshape(2, -1, 8).transpose(1, 2), t.reshape(2, -1, 8).transpose(1, 2)
    ours, ours_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=gamma, alpha=alpha), x, t)
    assert calls and calls[0] is not None  # the compiled path ran
    xd, td = x.double().requires_grad_(), t.double()
    truth = _alpha_t(td, alpha) * _ce(xd, td) * torch.sigmoid(-(2 * td - 1) * xd) ** gamma
    torch.testing.assert_close(ours, truth.float(), rtol=2e-5, atol=1e-30)
    torch.testing.assert_close(ours_grad, _eq10(xd.detach(), td, gamma, alpha).float(), rtol=2e-5, atol=1e-30)
    assert ours.shape == ours_grad.shape == x.shape


def test_compile_failure_or_switch_falls_back_to_the_eager_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    x, t = _data(n=losses._COMPILE_MIN_ELEMENTS, dtype=torch.float32, seed=2)
    monkeypatch.setattr(losses, "_COMPILE_MIN_ELEMENTS", 1 << 40)
    eager, eager_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    monkeypatch.setattr(losses, "_COMPILE_MIN_ELEMENTS", 1)

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setitem(losses._compiled, "cpu", {"fn": broken})
    with pytest.warns(UserWarning, match="torch.compile failed .*no compiler.*eager kernel"):
        loss, grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    assert losses._compiled["cpu"]["fn"] is None  # tried once per process
    torch.testing.assert_close(loss, eager, rtol=0, atol=0)
    torch.testing.assert_close(grad, eager_grad, rtol=0, atol=0)
    assert losses.fused_kernel() == "eager chunks (compilation failed: RuntimeError)"
    monkeypatch.delitem(losses._compiled["cpu"], "fn")
    monkeypatch.setenv("RETINANET_COMPILE", "0")
    assert losses._compiled_focal() is None
    assert losses.fused_kernel() == "eager chunks (RETINANET_COMPILE=0)"
    monkeypatch.delitem(losses._compiled["cpu"], "fn")
    monkeypatch.delenv("RETINANET_COMPILE")
    monkeypatch.setattr(losses, "_vector_isa", lambda: False)  # Inductor would emit a scalar loop
    assert losses._compiled_focal() is None
    assert "no vector ISA" in losses.fused_kernel()
    loss, grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), x, t)
    torch.testing.assert_close(loss, eager, rtol=0, atol=0)
    monkeypatch.delitem(losses._compiled["cpu"], "fn")


class _FakeIsa:
    """Stands in for Inductor's vector ISA object (``str`` and ``bit_width``)."""

    def __str__(self) -> str:
        return "avx512"

    def bit_width(self) -> int:
        return 512


def test_cuda_inputs_take_one_compiled_kernel_without_the_cpu_vector_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch on CUDA, checked without a GPU (fake CUDA tensors carry only shape, dtype and device): float32,
    bf16 and fp16 CUDA logits of paper size go to ``torch.compile`` of the one-pass kernel, compiled without the C++
    backend's ``cpp.simdlen`` (the CPU's compile keeps it); small inputs and bf16 on CPU keep the eager chunks.
    The numbers on a real GPU: benchmarks/gpu_check.py."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    compiled: dict[str, dict] = {}

    def fake_compile(fn, **kwargs):
        compiled[f"call{len(compiled)}"] = kwargs

        def kernel(x, t, p, with_grad, square):
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            return out, torch.empty_like(out) if with_grad else None
        return kernel

    monkeypatch.setattr(losses, "_compiled", {})
    monkeypatch.setattr(losses, "_params", {})
    monkeypatch.setattr(losses, "_triton_available", lambda: True)
    monkeypatch.setattr(losses, "_vector_isa", lambda: _FakeIsa())
    monkeypatch.setattr(torch, "compile", fake_compile)
    n = losses._COMPILE_MIN_ELEMENTS
    with FakeTensorMode():
        t = torch.zeros(n, device="cuda")
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            x = torch.zeros(n, device="cuda", dtype=dtype)
            assert losses._compiles(x, t)
            loss = focal_loss(x, t, gamma=2.0, alpha=0.25)  # (autograd's engine needs a real GPU)
            assert loss.dtype == torch.float32 and loss.device.type == "cuda"
            fused = losses._focal_compiled(x, t, gamma=2.0, alpha=0.25, with_grad=True)
            assert fused is not None and fused[1].dtype == torch.float32
        assert not losses._compiles(torch.zeros(n - 1, device="cuda"), t[:-1])
        assert not losses._compiles(torch.zeros(n, dtype=torch.bfloat16), torch.zeros(n))  # bf16 on CPU: eager
    assert len(compiled) == 1 and "cpp.simdlen" not in compiled["call0"].get("options", {})
    assert losses.fused_kernel("cuda:0") == "compiled one pass, Triton (CUDA)"
    assert losses._compiled_focal("cpu") is not None  # the CPU's compile names its vector width
    assert compiled["call1"]["options"] == {"cpp.simdlen": 512}
    assert losses.fused_kernel() == "compiled one pass, avx512 (512-bit vectors)"
    monkeypatch.setattr(losses, "_compiled", {})
    monkeypatch.setattr(losses, "_triton_available", lambda: False)
    assert losses.fused_kernel("cuda") == "eager chunks (no Triton for CUDA here)"


_ISA_PROBE = """
import json, torch
from retinanet.modeling import focal_kernels as losses
g = torch.Generator().manual_seed(0)
x = (torch.randn(losses._COMPILE_MIN_ELEMENTS, generator=g) * 6).requires_grad_()
t = (torch.rand(x.shape, generator=g) < 0.3).float()

def run():
    x.grad = None
    loss = losses.focal_loss(x, t, gamma=2.0, alpha=0.25)
    loss.sum().backward()
    return loss.detach(), x.grad

status = losses.fused_kernel()
(fused, fused_grad), _ = run(), losses._compiled["cpu"].update(fn=None)  # then the eager chunks
eager, eager_grad = run()
torch.testing.assert_close(fused, eager, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(fused_grad, eager_grad, rtol=1e-5, atol=1e-6)
print(json.dumps(status))
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="ATEN_CPU_CAPABILITY names x86 ISAs")
@pytest.mark.skipif(not _compiler_works(), reason="torch.compile has no working C++ compiler here")
def test_compiled_kernel_is_right_for_each_vector_isa_sharing_one_cache(tmp_path: Path) -> None:
    """Processes that compile for different vector ISAs (another CPU; ``ATEN_CPU_CAPABILITY`` here) and share
    Inductor's on-disk cache each get a kernel for their own ISA, equal to the eager one. (Before the ISA was part
    of the compile options, the AVX-512 kernel's source was reused for AVX2: half the elements wrong, NaN among
    them; and did not compile without vectors.)"""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env.update(TORCHINDUCTOR_CACHE_DIR=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[1]))
    statuses = []
    for capability in (None, "avx2", "default", None):
        run_env = env if capability is None else {**env, "ATEN_CPU_CAPABILITY": capability}
        out = subprocess.run([sys.executable, "-c", _ISA_PROBE], env=run_env, capture_output=True, text=True)
        assert out.returncode == 0, f"ATEN_CPU_CAPABILITY={capability}: {out.stderr[-3000:]}"
        statuses.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert statuses[0] == statuses[3]
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert statuses[1] == "compiled one pass, avx2 (256-bit vectors)"
    assert statuses[2].startswith("eager chunks (Inductor has no vector ISA")


def test_bfloat16_logits_are_computed_in_float32() -> None:
    x, t = _data(n=500, dtype=torch.float32)
    xb = x.bfloat16()
    loss, grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), xb, t)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    ref, ref_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), xb.float(), t)
    torch.testing.assert_close(loss, ref, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad.bfloat16(), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast changes nothing inside the loss
        auto, auto_grad = _value_and_grad(lambda a, b: focal_loss(a, b, gamma=2.0, alpha=0.25), xb, t)
    torch.testing.assert_close(auto, loss, rtol=0, atol=0)
    torch.testing.assert_close(auto_grad, grad, rtol=0, atol=0)


def test_no_grad_and_retained_graph() -> None:
    x, t = _data(n=100)
    x.requires_grad_()
    with torch.no_grad():
        eval_loss = focal_loss(x, t, gamma=2.0, alpha=0.25)
    assert eval_loss.grad_fn is None
    loss = focal_loss(x, t, gamma=2.0, alpha=0.25)
    torch.testing.assert_close(loss, eval_loss, rtol=0, atol=0)
    (g1,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(loss.sum(), x)
    torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def _naive_fl_star(x: torch.Tensor, t: torch.Tensor, gamma: float, beta: float, alpha: float | None) -> torch.Tensor:
    """Eq. 6-8 literally (float64): x_t = y x, p*_t = sigmoid(gamma x_t + beta), FL* = -log(p*_t) / gamma."""
    x_t = (2 * t - 1) * x
    return -_alpha_t(t, alpha) * F.logsigmoid(gamma * x_t + beta) / gamma


@pytest.mark.parametrize(("gamma", "beta"), [(2.0, 1.0), (4.0, 0.0), (1.0, -1.0), (0.5, 3.0)])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_star_value_eq8_and_gradient_eq11(gamma: float, beta: float, alpha: float | None) -> None:
    x, t = _data(scale=6.0)
    loss, grad = _value_and_grad(lambda a, b: focal_star_loss(a, b, gamma=gamma, beta=beta, alpha=alpha), x, t)
    ref, ref_grad = _value_and_grad(lambda a, b: _naive_fl_star(a, b, gamma, beta, alpha), x, t)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-300)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-300)
    y = 2 * t - 1
    one_minus_p_star = torch.sigmoid(-(gamma * y * x + beta))  # 1 - p*_t without cancellation
    torch.testing.assert_close(grad, -_alpha_t(t, alpha) * y * one_minus_p_star, rtol=1e-12, atol=1e-300)  # eq. 11
    x32, t32 = (x * 20).float(), t.float()  # far tails in float32: finite and still eq. 8 / eq. 11
    loss32, grad32 = _value_and_grad(lambda a, b: focal_star_loss(a, b, gamma=gamma, beta=beta, alpha=alpha), x32, t32)
    ref32, ref_grad32 = _value_and_grad(lambda a, b: _naive_fl_star(a, b, gamma, beta, alpha), x32.double(), t)
    torch.testing.assert_close(loss32, ref32.float(), rtol=1e-5, atol=1e-30)
    torch.testing.assert_close(grad32, ref_grad32.float(), rtol=1e-5, atol=1e-30)
    assert torch.autograd.gradcheck(lambda a: focal_star_loss(a, t[:30], gamma=gamma, beta=beta, alpha=alpha),
                                    (x[:30].clone().requires_grad_(),))


def test_focal_star_paper_settings_downweight_easy_examples() -> None:
    """Appendix A: the FL* settings of Table 3 give less loss than CE to well-classified examples (x_t > 0)."""
    x = torch.linspace(0.5, 5.0, 10, dtype=torch.float64)
    t = torch.ones_like(x)
    ce = focal_loss(x, t, gamma=0.0, alpha=None)
    for gamma, beta in [(2.0, 1.0), (4.0, 0.0)]:
        assert torch.all(focal_star_loss(x, t, gamma=gamma, beta=beta, alpha=None) < ce)


def test_bad_arguments_raise_value_error() -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="focal_loss: logits .* differ in shape"):
        focal_loss(x, torch.zeros(3), gamma=2.0, alpha=0.25)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        focal_loss(x, x, gamma=-1.0, alpha=0.25)
    with pytest.raises(ValueError, match="alpha must be in"):
        focal_loss(x, x, gamma=2.0, alpha=1.5)
    with pytest.raises(ValueError, match="gamma must be > 0"):
        focal_star_loss(x, x, gamma=0.0, beta=1.0, alpha=0.25)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        smooth_l1_loss(x, x, beta=-0.1)


def test_build_classification_loss_follows_config() -> None:
    x, t = _data(n=300)
    default = LossConfig()
    torch.testing.assert_close(build_classification_loss(default)(x, t),
                               focal_loss(x, t, gamma=default.gamma, alpha=default.alpha))
    cfg = LossConfig(cls="focal_star", gamma=4.0, beta=0.0, alpha=0.25)
    torch.testing.assert_close(build_classification_loss(cfg)(x, t), _naive_fl_star(x, t, 4.0, 0.0, 0.25))
    ce = build_classification_loss(LossConfig(gamma=0.0, alpha=None))(x, t)
    torch.testing.assert_close(ce, F.binary_cross_entropy_with_logits(x, t, reduction="none"))


@pytest.mark.parametrize("beta", [0.0, 0.11, 1.0])
def test_smooth_l1_matches_definition_and_torch(beta: float) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 4, generator=g, dtype=torch.float64), torch.randn(50, 4, generator=g, dtype=torch.float64)
    d = (a - b).abs()
    expected = d if beta == 0 else torch.where(d < beta, 0.5 * d**2 / beta, d - 0.5 * beta)
    torch.testing.assert_close(smooth_l1_loss(a, b, beta=beta), expected)
    torch.testing.assert_close(smooth_l1_loss(a, b, beta=beta), F.smooth_l1_loss(a, b, beta=beta, reduction="none"))
    torch.testing.assert_close(l1_loss(a, b), d)
    cfg = LossConfig(box="smooth_l1", smooth_l1_beta=beta)
    torch.testing.assert_close(build_box_loss(cfg)(a, b), expected)
    torch.testing.assert_close(build_box_loss(LossConfig(box="l1"))(a, b), d)


def test_smooth_l1_detectron_beta_transition() -> None:
    """Detectron's beta = 0.11 (the config default): quadratic below, linear above, continuous at beta."""
    beta = LossConfig().smooth_l1_beta
    d = torch.tensor([0.0, 0.05, beta, 0.5], dtype=torch.float64)
    out = smooth_l1_loss(d, torch.zeros_like(d), beta=beta)
    expected = torch.tensor([0.0, 0.5 * 0.05**2 / beta, 0.5 * beta, 0.5 - 0.5 * beta], dtype=torch.float64)
    torch.testing.assert_close(out, expected)
    assert math.isclose(float(out[2]), 0.5 * beta)

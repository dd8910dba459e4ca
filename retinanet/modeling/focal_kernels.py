"""The fused kernels that compute the focal loss (eq. 5) and FL* (appendix A) in training, with their gradient.

:mod:`retinanet.modeling.losses` states the formulas (``focal_loss_reference``, ``focal_star_reference``); this
module computes the same values, fast, in little memory, with a gradient that is finite everywhere. Notation
(section 3 and appendix A): ``p = sigmoid(x)``, ``y = +1`` for target 1 and ``-1`` for target 0, ``x_t = y x``
(eq. 6), ``p_t = sigmoid(x_t)`` (eq. 2), ``alpha_t = alpha`` for target 1 and ``1 - alpha`` for 0.

Numerics. The paper fuses the sigmoid into the loss layer for stability (section 3.2). Here ``-log p_t`` is
``softplus(-x_t)`` and ``log(1 - p_t) = log p_t - x_t`` (never ``log(sigmoid(x))``), the modulating factor is
``(1 - p_t)^gamma = exp(gamma * log(1 - p_t))`` and the gradient is the closed form of appendix B (eq. 10), so loss
and gradient are finite for every finite logit and every ``gamma >= 0``. Autograd through ``(1 - p_t) ** gamma``
(what ``torchvision.ops.sigmoid_focal_loss`` and the reference do) gives NaN gradients for ``0 < gamma < 1`` once
``1 - p_t`` rounds to 0 (``x_t > ~17`` in float32): its derivative ``gamma (1 - p_t)^(gamma - 1)`` is ``inf`` there,
times 0.

Speed and memory (the loss sees ~100k anchors x 80 classes per image). Loss and gradient are computed in one pass
over the input: on paper-size inputs one compiled loop (:func:`_compiled_focal`: Inductor's C++ backend on CPU, one
Triton kernel on CUDA), elsewhere chunk by chunk (:func:`_focal_kernel`; on CPU spread over the intra-op threads), so
the temporaries stay small (a few chunk-sized buffers, in cache) and nothing but the gradient is kept for backward,
where it is scaled in place.
Peak extra memory is two tensors of the input's size (the loss and the gradient); torchvision's formula and autograd
allocate ~10-20. Half-precision inputs (bf16 autocast) are computed in float32; the loss is returned in float32 (it
is summed over millions of elements) and the gradient is cast back to the logits' dtype.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_CPU = 1 << 16
"""Elements per chunk and intra-op thread on CPU: each op of a chunk is split over ATen's intra-op threads, and each
thread's slices of the few live chunk buffers (256 KiB each) stay in its L2 cache. (Spreading chunks over Python
threads instead was slower: ops this small spend much of their time in the interpreter, under the GIL.)"""
_CHUNK_ACCEL = 1 << 20
"""Elements per chunk on accelerators: few kernel launches, temporaries still small next to the activations."""

Kernel = Callable[[Tensor, Tensor, Tensor, Tensor | None], None]
"""``kernel(x, t, loss_out, grad_out)`` on 1-D float chunks: writes the loss and, unless ``grad_out`` is None,
d loss / d x into the given views."""


def _run(logits: Tensor, targets: Tensor, kernel: Kernel, with_grad: bool) -> tuple[Tensor, Tensor | None]:
    """The loss ``[...]`` and, if ``with_grad``, its derivative ``[...]``: FL on large inputs from the compiled
    one-pass kernel where it applies (:func:`_compiles`), everything else chunk by chunk."""
    if isinstance(kernel, partial) and kernel.func is _focal_kernel:
        fused = _focal_compiled(logits, targets, with_grad=with_grad, **kernel.keywords)
        if fused is not None:
            return fused
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    x = logits.reshape(-1)
    t = targets.reshape(-1)
    loss = torch.empty(x.shape, dtype=dtype, device=x.device)
    grad = torch.empty_like(loss) if with_grad else None
    chunk = _CHUNK_CPU * torch.get_num_threads() if x.device.type == "cpu" else _CHUNK_ACCEL
    with torch.no_grad():
        for start in range(0, x.numel(), chunk):
            end = start + chunk
            kernel(x[start:end].to(dtype), t[start:end].to(dtype), loss[start:end],
                   None if grad is None else grad[start:end])
    return loss.view(logits.shape), None if grad is None else grad.view(logits.shape)


class _ElementwiseLoss(torch.autograd.Function):
    """Computes loss and gradient in one fused pass; backward scales the stored gradient by the incoming one.

    The stored gradient is scaled in place and handed to autograd, so the backward allocates nothing. Should the
    graph be backpropagated again (``retain_graph``, gradcheck), the gradient is recomputed from the saved inputs
    (references, kept until the graph is freed, as autograd keeps them for torchvision's formula too).
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, targets: Tensor, kernel: Kernel,  # type: ignore[override]
                with_grad: bool) -> Tensor:
        loss, grad = _run(logits, targets, kernel, with_grad)
        if grad is not None:
            ctx.grad = grad
            ctx.kernel = kernel
            ctx.save_for_backward(logits, targets)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        logits, targets = ctx.saved_tensors
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # a second backward through this graph: the first one consumed the stored gradient
            grad = _run(logits, targets, ctx.kernel, with_grad=True)[1]
        return grad.mul_(grad_output).to(logits.dtype), None, None, None


def _focal_one_pass(x: Tensor, t: Tensor, p: Tensor, with_grad: bool,
                    square: bool) -> tuple[Tensor, Tensor | None]:
    """FL (eq. 5) and eq. 10 as one expression: compiled (:func:`_compiled_focal`), it is one loop over the input
    that reads ``x`` and ``t`` once and writes the loss and the gradient, with no temporaries. Half-precision
    inputs (CUDA) are read as they are and computed in float32 inside the loop; loss and gradient are float32.

    ``p = [gamma, c0, c1, a0, a1]`` (a float32 tensor, not Python floats: torch 2.14's compiled graph with
    ``dynamic=True`` reused the first call's float values for later calls with other values), with
    ``alpha_t = a0 + a1 t`` and ``-y alpha_t = c0 - c1 t`` (:func:`_weights`); the formulas are those of
    :func:`_focal_kernel`."""
    gamma, c0, c1, a0, a1 = p.unbind()
    x, t = x.float(), t.float()  # no-ops for float32
    z = x - 2.0 * x * t  # -x_t (eq. 6)
    # Three transcendental functions per element instead of five: with e = exp(-|z|), -log p_t = softplus(z) =
    # max(z, 0) + log1p(e), log(1 - p_t) = log sigmoid(z) = min(z, 0) - log1p(e), 1 - p_t = sigmoid(z) from e,
    # and (1 - p_t)^gamma = exp(gamma log(1 - p_t)) (q * q for gamma 2): each to full relative precision.
    e = torch.exp(-z.abs())
    l1p = torch.log1p(e)
    ce = z.clamp(min=0) + l1p
    q = torch.where(z >= 0, 1.0, e) / (1.0 + e)
    q_g = q * q if square else torch.exp(gamma * (z.clamp(max=0) - l1p))  # square: gamma == 2, the default
    fl = q_g * ce
    loss = fl * (a0 + a1 * t)
    if not with_grad:
        return loss, None
    return loss, (q_g * q + gamma * (1.0 - q) * fl) * (c0 - c1 * t)


_COMPILE_MIN_ELEMENTS = 1 << 20
"""Inputs from this size on (the paper's ~100k anchors x 80 classes per image) use the compiled one-pass kernel;
smaller ones (``mini``: ~3k anchors x 6 classes) are not worth a compilation (a few seconds, once per process)."""
_COMPILED_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpu": (torch.float32,),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
}
"""Logit dtypes the compiled kernel takes, per device type. On CUDA, half-precision logits are read as they are
and upcast inside the kernel (half the bytes read); on CPU, the kernel is checked for float32 only."""
_compiled: dict[str, dict[str, Any]] = {}
"""Per device type (``cpu``, ``cuda``): ``fn``, the compiled kernel or None, and ``status`` (:func:`fused_kernel`)."""
_params: dict[tuple[str, float, float | None], Tensor] = {}
"""The kernel's parameter tensor per (device, gamma, alpha): made once, so a CUDA step does not copy it from the
host (a pageable copy waits for the queued work)."""


def _vector_isa() -> Any:
    """The vector instruction set Inductor's C++ backend compiles for here (its own choice: the widest whose test
    program builds and loads, capped by ``ATEN_CPU_CAPABILITY``); falsy where it has none and would emit scalar
    loops."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return pick_vec_isa()


def _triton_available() -> bool:
    """Whether Inductor can generate Triton kernels here (Triton installed and a GPU it supports)."""
    from torch.utils._triton import has_triton

    return has_triton()


def _compiled_focal(device_type: str = "cpu") -> Callable[..., tuple[Tensor, Tensor | None]] | None:
    """``torch.compile`` of :func:`_focal_one_pass` for ``device_type``, or None, with the reason in
    :func:`fused_kernel`: compilation off (``RETINANET_COMPILE=0``), no vector ISA (CPU) or no Triton (CUDA), a
    device type without a compiled kernel, or a failed compilation earlier in this process (no compiler: a warning,
    then the eager chunks).

    CUDA: Inductor generates one Triton kernel (no ``cpp.simdlen``: that option is the C++ backend's; Triton's
    cache is keyed by the GPU's architecture itself). It replaces the eager chunks' 12 kernel launches per 2^20
    elements, each reading and writing the whole chunk, by one pass over the input.

    CPU: Inductor's C++ backend, for this CPU's vector ISA.

    The ISA's width is passed as ``cpp.simdlen``, which puts it in the key of Inductor's on-disk graph cache. Left
    implicit, torch 2.14 keyed the generated C++ by the graph alone: a cache written on a CPU with AVX-512 (16
    floats a vector) was compiled again for AVX2 (8 floats) on another CPU or under ``ATEN_CPU_CAPABILITY=avx2``,
    and every other element of the loss and gradient came out wrong (NaN among them); under
    ``ATEN_CPU_CAPABILITY=default`` it did not compile. Without a vector ISA Inductor emits a scalar loop, slower
    than the eager chunks (whose ATen kernels vectorize on their own): 65 against 28 ms on 8M elements, 2 threads,
    Intel Xeon (Sapphire Rapids); so the eager chunks are used then.
    """
    entry = _compiled.setdefault(device_type, {})
    if "fn" in entry:
        return entry["fn"]
    if os.environ.get("RETINANET_COMPILE", "1") == "0":
        entry.update(fn=None, status="eager chunks (RETINANET_COMPILE=0)")
    elif device_type == "cuda":
        if not _triton_available():
            entry.update(fn=None, status="eager chunks (no Triton for CUDA here)")
        else:
            entry.update(status="compiled one pass, Triton (CUDA)",
                         fn=torch.compile(_focal_one_pass, dynamic=True, fullgraph=True))
    elif device_type == "cpu":
        isa = _vector_isa()
        if not isa:
            entry.update(fn=None, status="eager chunks (Inductor has no vector ISA on this CPU: a scalar loop "
                                         "would be slower)")
        else:
            entry.update(status=f"compiled one pass, {isa} ({isa.bit_width()}-bit vectors)",
                         fn=torch.compile(_focal_one_pass, dynamic=True, fullgraph=True,
                                          options={"cpp.simdlen": isa.bit_width()}))
    else:
        entry.update(fn=None, status=f"eager chunks (no compiled kernel for {device_type})")
    return entry["fn"]


def fused_kernel(device: torch.device | str = "cpu") -> str:
    """Which kernel computes FL and its gradient on paper-size inputs (>= 2^20 elements of a dtype in
    :data:`_COMPILED_DTYPES`) on ``device``'s type, and why: e.g. ``compiled one pass, avx512 avx512_vnni (512-bit
    vectors)``, ``compiled one pass, Triton (CUDA)`` or ``eager chunks (...)``."""
    device_type = torch.device(device).type
    _compiled_focal(device_type)
    return _compiled[device_type]["status"]


def _compiles(logits: Tensor, targets: Tensor) -> bool:
    """Whether FL on these inputs takes the compiled kernel: at least :data:`_COMPILE_MIN_ELEMENTS` elements, logits
    of a dtype the device's kernel takes (:data:`_COMPILED_DTYPES`), float32 targets (or the logits' dtype)."""
    dtypes = _COMPILED_DTYPES.get(logits.device.type, ())
    return (logits.dtype in dtypes and targets.dtype in (torch.float32, logits.dtype)
            and logits.numel() >= _COMPILE_MIN_ELEMENTS)


def _focal_compiled(logits: Tensor, targets: Tensor, gamma: float, alpha: float | None,
                    with_grad: bool) -> tuple[Tensor, Tensor | None] | None:
    """Loss and gradient (float32) from the compiled kernel, or None when it does not apply (:func:`_compiles`) or
    compilation fails."""
    if not _compiles(logits, targets):
        return None
    device_type = logits.device.type
    fn = _compiled_focal(device_type)
    if fn is None:
        return None
    key = (str(logits.device), gamma, alpha)
    if key not in _params:
        c0, c1 = _weights(alpha)
        a0, a1 = (1.0, 0.0) if alpha is None else (1.0 - alpha, 2.0 * alpha - 1.0)
        _params[key] = torch.tensor([gamma, c0, c1, a0, a1], dtype=torch.float32, device=logits.device)
    params = _params[key]
    try:
        with torch.no_grad():
            return fn(logits.detach(), targets, params, with_grad, gamma == 2.0)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back to the eager kernel, once
        warnings.warn(f"focal_loss: torch.compile failed ({type(exc).__name__}: {exc}); using the eager kernel",
                      stacklevel=3)
        _compiled[device_type].update(fn=None, status=f"eager chunks (compilation failed: {type(exc).__name__})")
        return None


def _apply(logits: Tensor, targets: Tensor, kernel: Kernel) -> Tensor:
    # ctx.needs_input_grad is True under no_grad too: decide here whether the gradient is needed at all.
    with_grad = logits.requires_grad and torch.is_grad_enabled()
    return _ElementwiseLoss.apply(logits, targets, kernel, with_grad)


def _check(logits: Tensor, targets: Tensor, name: str) -> None:
    if logits.shape != targets.shape:
        raise ValueError(f"{name}: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    if not logits.is_floating_point():
        raise ValueError(f"{name}: logits must be floating point, got {logits.dtype}")


def _weights(alpha: float | None) -> tuple[float, float]:
    """``(c0, c1)`` with ``-y * alpha_t = c0 - c1 * t`` for t in {0, 1} (``alpha_t = 1`` when alpha is None)."""
    return (1.0, 2.0) if alpha is None else (1.0 - alpha, 1.0)


def _write_weighted(value: Tensor, t: Tensor, alpha: float | None, out: Tensor) -> None:
    """``out = alpha_t * value`` with ``alpha_t = (1 - alpha) + (2 alpha - 1) t`` (eq. 3 and 5)."""
    if alpha is None:
        out.copy_(value)
    else:
        torch.mul(value, 1.0 - alpha, out=out).addcmul_(value, t, value=2.0 * alpha - 1.0)


def _softplus(v: Tensor) -> Tensor:
    """``log(1 + exp(v))`` to full relative precision in float32 and float64 (linear beyond the threshold, where
    ``log1p(exp(-v)) < eps * v``); one fused op, no overflow."""
    return F.softplus(v, threshold=20.0 if v.dtype == torch.float32 else 40.0)


def _focal_kernel(x: Tensor, t: Tensor, loss: Tensor, grad: Tensor | None, *, gamma: float,
                  alpha: float | None) -> None:
    """FL (eq. 5) and its derivative (eq. 10 times alpha_t) on one chunk (12 elementwise passes for FL + gradient)."""
    z = torch.addcmul(x, x, t, value=-2.0)  # z = -x_t (eq. 6); exact for t in {0, 1}
    ce = _softplus(z)  # -log p_t = log(1 + exp(-x_t)): CE, eq. 1-2
    # 1 - p_t = sigmoid(-x_t), to full relative precision also where it is tiny (easy examples); its power is then
    # relatively precise too (exp(gamma * log(1 - p_t)) would be as well, at the cost of two more passes).
    q = torch.sigmoid(z)
    q_g = torch.pow(q, gamma) if gamma != 0 else None  # (1 - p_t)^gamma
    fl = torch.mul(q_g, ce) if q_g is not None else ce  # eq. 4
    if alpha is None:
        loss.copy_(fl)
    else:  # alpha_t = (1 - alpha) + (2 alpha - 1) t (eq. 3 and 5)
        torch.mul(fl, torch.rsub(t, 1.0 - alpha, alpha=1.0 - 2.0 * alpha), out=loss)
    if grad is None:
        return
    # eq. 10: dFL/dx = y (1-p_t)^g (g p_t log p_t + p_t - 1) = -y [(1-p_t)^(g+1) + g p_t FL]
    d = q_g.mul_(q) if q_g is not None else q  # (1 - p_t)^(gamma + 1)
    if gamma != 0:
        # p_t = 1 - q: absolutely precise, which suffices: where p_t is tiny, this term is tiny next to the first.
        d.addcmul_(torch.rsub(q, 1.0), fl, value=gamma)
    c0, c1 = _weights(alpha)
    torch.mul(d, torch.rsub(t, c0, alpha=c1), out=grad)  # -y alpha_t = c0 - c1 t


def _focal_star_kernel(x: Tensor, t: Tensor, loss: Tensor, grad: Tensor | None, *, gamma: float, beta: float,
                       alpha: float | None) -> None:
    """FL* (eq. 7-8) and its derivative (eq. 11 times alpha_t) on one chunk."""
    w = torch.addcmul(x, x, t, value=-2.0).mul_(gamma).sub_(beta)  # w = -(gamma x_t + beta), so p*_t = sigmoid(-w)
    _write_weighted(_softplus(w).div_(gamma), t, alpha, loss)  # eq. 8: -log(p*_t) / gamma = softplus(w) / gamma
    if grad is None:
        return
    d = torch.sigmoid(w, out=w)  # 1 - p*_t;  eq. 11: dFL*/dx = y (p*_t - 1) = -y (1 - p*_t)
    c0, c1 = _weights(alpha)
    torch.mul(d, c0, out=grad).addcmul_(d, t, value=-c1)


def focal_loss(logits: Tensor, targets: Tensor, *, gamma: float, alpha: float | None) -> Tensor:
    """Alpha-balanced focal loss of every element, eq. 5: ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``
    (:func:`retinanet.modeling.losses.focal_loss_reference`), fused with its gradient.

    ``alpha=None`` gives eq. 4 (no balancing); ``gamma=0`` gives alpha-balanced CE (eq. 3), or CE (eq. 1) with
    ``alpha=None``. ``torchvision.ops.sigmoid_focal_loss(..., alpha=-1)`` corresponds to ``alpha=None``.

    Args:
        logits: ``[...]`` float (e.g. ``[N, R, K]``); bf16/fp16 are computed in float32.
        targets: ``[...]`` same shape, exactly 0 or 1 (soft targets are not supported).
        gamma: focusing parameter, ``>= 0``.
        alpha: weight of the positive class in ``[0, 1]``, or None.

    Returns:
        ``[...]`` the loss per element (float32 for half-precision logits). Its gradient is the closed form of
        appendix B (eq. 10, times alpha_t), finite for all finite logits.
    """
    _check(logits, targets, "focal_loss")
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0, got {gamma!r}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal_loss: alpha must be in [0, 1] or None, got {alpha!r}")
    kernel = partial(_focal_kernel, gamma=float(gamma), alpha=None if alpha is None else float(alpha))
    return _apply(logits, targets, kernel)


def focal_star_loss(logits: Tensor, targets: Tensor, *, gamma: float, beta: float, alpha: float | None) -> Tensor:
    """FL* of appendix A for every element: ``p*_t = sigmoid(gamma x_t + beta)`` (eq. 7), ``FL* = -log(p*_t) / gamma``
    (eq. 8), times ``alpha_t`` unless ``alpha`` is None (the paper used alpha = .25 for all FL* runs)
    (:func:`retinanet.modeling.losses.focal_star_reference`), fused with its gradient.

    Args:
        logits: ``[...]`` float; targets: ``[...]`` same shape, exactly 0 or 1.
        gamma: steepness, ``> 0``; beta: shift; alpha: weight of the positive class in ``[0, 1]``, or None.

    Returns:
        ``[...]`` the loss per element; its gradient is eq. 11 (``y (p*_t - 1)``) times alpha_t.
    """
    _check(logits, targets, "focal_star_loss")
    if gamma <= 0:
        raise ValueError(f"focal_star_loss: gamma must be > 0 (eq. 8 divides by it), got {gamma!r}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"focal_star_loss: alpha must be in [0, 1] or None, got {alpha!r}")
    kernel = partial(_focal_star_kernel, gamma=float(gamma), beta=float(beta),
                     alpha=None if alpha is None else float(alpha))
    return _apply(logits, targets, kernel)

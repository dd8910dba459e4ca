"""ResNet + FPN backbone producing P3-P7 (paper section 4, 'Feature Pyramid Network Backbone'; Fig. 3).

P3-P5 come from torchvision's FPN over C3-C5 (lateral 1x1 + top-down + 3x3 output convs). P6 is a 3x3 stride-2
conv on C5 (not P5, as in the paper's code), P7 a 3x3 stride-2 conv on ReLU(P6). There is no P2. All levels have
``fpn_channels`` channels (256 in the paper).

For ImageNet-pretrained backbones the paper's code froze the BatchNorm statistics and affine parameters and the
stem + res2 (``norm='frozen_bn'``, ``freeze_at=2``). Training from scratch at small scale needs trainable
normalization: ``norm='bn'`` or ``norm='gn'`` (GroupNorm, 32 groups).

``backbone_style='caffe2'`` is the ResNet the paper fine-tuned, Detectron's MSRA one: each downsampling bottleneck
strides its first 1x1 conv (Detectron's ``RESNETS.STRIDE_1X1``), where torchvision strides the 3x3 ("ResNet
v1.5"). Same parameters, different features: the weights must be of the same style, and a weight file that
declares its style (``retinanet/tools/caffe2_weights.py`` writes ``backbone_style: caffe2``) is checked against it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from retinanet.config import ConfigError, ModelConfig

#: Key of a weights file's declared backbone style, beside its ``model`` state_dict.
STYLE_KEY = "backbone_style"
#: Output channels of C3, C4, C5 per ResNet depth.
STAGE_CHANNELS = {18: (128, 256, 512), 34: (128, 256, 512), 50: (512, 1024, 2048), 101: (512, 1024, 2048)}


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return partial(nn.GroupNorm, 32)
    raise ConfigError(f"model.norm: unknown normalization {norm!r}")


def load_state_dict_file(path: str | Path, field: str = "model.pretrained") -> dict[str, Tensor]:
    """Load a state_dict without executing code from the file (``weights_only=True``).

    Raises:
        ConfigError: naming ``field`` and the path, if the file is missing, unreadable or not a state_dict.
    """
    return load_weights_file(path, field)[0]


def load_weights_file(path: str | Path, field: str = "model.pretrained") -> tuple[dict[str, Tensor], str | None]:
    """:func:`load_state_dict_file` and the backbone style the file declares (``backbone_style`` beside its
    ``model`` state_dict), None where it declares none (torchvision's files, ours from ``pretrain``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{field}: weight file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ConfigError(f"{field}: cannot load weights from {path}: {type(exc).__name__}: {exc}") from None
    style = None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        style = state.get(STYLE_KEY)
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConfigError(f"{field}: {path} does not hold a state_dict of tensors")
    return state, style


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools NCHW CPU tensors in channels-last layout: bit-identical output (a max is exact),
    ~10x faster on CPU, where ATen's NCHW max-pool kernel is slow (the ResNet stem's 3x3/s2 pool was ~7% of a
    mini training step). The result is returned in the input's layout.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or not x.is_contiguous():
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()

    @classmethod
    def like(cls, pool: nn.MaxPool2d) -> ChannelsLastMaxPool2d:
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.return_indices, pool.ceil_mode)


def stride_in_1x1(body: nn.Module) -> None:
    """Move the stride of every downsampling torchvision ``Bottleneck`` from its 3x3 conv (``conv2``) to its first
    1x1 conv (``conv1``), as in the MSRA ResNets Detectron used (``STRIDE_1X1``). The shortcut keeps its stride.
    BasicBlocks (ResNet-18/34) stride their first 3x3 in both styles and are left alone."""
    for block in body.modules():
        if isinstance(block, torchvision.models.resnet.Bottleneck) and block.conv2.stride != (1, 1):
            block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


class ResNetFPN(nn.Module):
    """ResNet-{18,34,50,101} body with an FPN head, randomly initialized (:func:`build_backbone` loads the weights
    a config names and freezes its stages).

    Input ``[N, 3, H, W]``; output list of 5 tensors ``[N, C, H_l, W_l]`` for P3..P7 (``C = fpn_channels``).

    Args (keyword-only):
        depth: 18, 34, 50 or 101.
        fpn_channels: C, 256 in the paper.
        norm: ``frozen_bn``, ``bn`` or ``gn`` (GroupNorm, 32 groups).
        style: ``torchvision`` (stride on the 3x3 conv) or ``caffe2`` (Detectron's MSRA ResNets: on the first 1x1).
    """

    def __init__(self, *, depth: int, fpn_channels: int = 256, norm: str = "frozen_bn",
                 style: str = "torchvision") -> None:
        super().__init__()
        if depth not in STAGE_CHANNELS:
            raise ValueError(f"ResNetFPN: depth {depth} is not one of {sorted(STAGE_CHANNELS)}")
        self.depth, self.norm, self.style = depth, norm, style
        body = torchvision.models.get_model(f"resnet{depth}", weights=None, norm_layer=_norm_layer(norm))
        del body.fc, body.avgpool
        body.maxpool = ChannelsLastMaxPool2d.like(body.maxpool)
        if style == "caffe2":
            stride_in_1x1(body)
        self.body = body
        c3, c4, c5 = STAGE_CHANNELS[depth]
        extra = LastLevelP6P7(c5, fpn_channels)
        extra.use_P5 = False  # P6 from C5 even when C5 and P5 widths agree (paper, Fig. 3)
        self.fpn = FeaturePyramidNetwork([c3, c4, c5], fpn_channels, extra_blocks=extra)

    def load_pretrained(self, pretrained: str) -> None:
        """Load the ResNet body's weights: torchvision's ImageNet ones (``imagenet``) or a state_dict file of this
        style (``model.pretrained``).

        Raises:
            ConfigError: weights that do not fit (another depth or style, GroupNorm, a missing or bad file).
        """
        if self.norm == "gn":
            raise ConfigError("model.pretrained: ImageNet ResNet weights carry BatchNorm; use model.norm frozen_bn "
                              "or bn with them, or pretrained none with gn")
        if pretrained == "imagenet":
            weights = torchvision.models.get_model_weights(f"resnet{self.depth}").IMAGENET1K_V1
            state = weights.get_state_dict(progress=False)
            source = f"torchvision {weights}"
        else:
            state, style = load_weights_file(pretrained)
            source = pretrained
            if (style or "torchvision") != self.style:  # same names and shapes: only the file can tell
                raise ConfigError(f"model.backbone_style: {self.style}, but {source} holds "
                                  f"{style or 'torchvision'}-style weights"
                                  + ("" if style else " (declares no style; convert Detectron's R-50.pkl / R-101.pkl "
                                                      "with python -m retinanet convert-weights)"))
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = self.body.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ConfigError(f"model.pretrained: {source} does not fit resnet{self.depth}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")

    def freeze(self, freeze_at: int) -> None:
        """Freeze the first ``freeze_at`` stages: 1 the stem, 2 also res2 (Detectron's default), ... 5 all."""
        stages = [nn.ModuleList([self.body.conv1, self.body.bn1]), self.body.layer1, self.body.layer2,
                  self.body.layer3, self.body.layer4]
        for stage in stages[:freeze_at]:
            for p in stage.parameters():
                p.requires_grad_(False)

    def bottom_up(self, images: Tensor, stages: int = 4) -> list[Tensor]:
        """ResNet's pathway ``[N, 3, H, W]`` -> ``[c2, c3, c4, c5][:stages]`` (stride 4 ... 32; ``stages`` 0 gives
        the stem's output alone, ``[N, 64, H/4, W/4]``)."""
        b = self.body
        x = b.maxpool(torch.relu_(conv_bn(b.conv1, b.bn1, images)))
        if stages == 0:
            return [x]
        out = []
        for stage in (b.layer1, b.layer2, b.layer3, b.layer4)[:stages]:
            x = _stage(stage, x)
            out.append(x)
        return out

    def forward(self, images: Tensor) -> list[Tensor]:
        """P3-P7 (section 4, "Feature Pyramid Network Backbone") from c3-c5 of :meth:`bottom_up`."""
        _, c3, c4, c5 = self.bottom_up(images)
        return list(self.fpn({"c3": c3, "c4": c4, "c5": c5}).values())


def build_backbone(cfg: ModelConfig) -> ResNetFPN:
    """The backbone of a model config: ``depth``, ``fpn_channels``, ``norm``, ``backbone_style``, then the weights of
    ``pretrained`` (unless ``none``) and ``freeze_at`` frozen stages."""
    if cfg.depth not in STAGE_CHANNELS:
        raise ConfigError(f"model.depth: {cfg.depth} is not one of {sorted(STAGE_CHANNELS)}")
    backbone = ResNetFPN(depth=cfg.depth, fpn_channels=cfg.fpn_channels, norm=cfg.norm, style=cfg.backbone_style)
    if cfg.pretrained != "none":
        backbone.load_pretrained(cfg.pretrained)
    backbone.freeze(cfg.freeze_at)
    return backbone


# --------------------------------------------------------------------------------------------------------------
# Frozen BatchNorm folded into the convolutions


def conv_bn(conv: nn.Conv2d, bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(conv(x))`` ``[N, C_in, H, W] -> [N, C_out, H', W']``. A frozen BN is an affine map per channel
    (``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``), applied where it is cheaper:

    - folded into the convolution, ``conv(x; w * scale) + shift``, where no gradient can flow to the weights (frozen
      layers, or autograd off: the folded weights are computed once and cached until the weights change) or where
      the weights are smaller than the output (the fold is one pass over the weights in the forward and one in the
      backward, instead of passes over the activations);
    - otherwise on the output, ``conv(x; w) * scale + shift`` in one ``addcmul`` (ResNet's res4/res5 at the mini
      scale: a 512 x 512 x 3 x 3 weight is 36x its 8 x 512 x 4 x 4 output).

    Same values up to float rounding. Trainable BN and GroupNorm are applied as they are."""
    if not isinstance(bn, FrozenBatchNorm2d):
        return bn(conv(x))
    if _needs_grad(conv) and conv.weight.numel() > _output_numel(conv, x):
        scale, shift = _affine(conv, bn)
        y = F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        return torch.addcmul(shift.view(1, -1, 1, 1), y, scale.view(1, -1, 1, 1))
    weight, bias = _folded(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _needs_grad(conv: nn.Conv2d) -> bool:
    return torch.is_grad_enabled() and conv.weight.requires_grad


def _output_numel(conv: nn.Conv2d, x: Tensor) -> int:
    """Elements of ``conv(x)`` (PyTorch's output size formula)."""
    size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
            zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.padding, conv.dilation, strict=True)]
    return x.shape[0] * conv.out_channels * size[0] * size[1]


def _affine(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` ``[C_out]`` of ``bn(conv(x))`` as an affine map of ``conv(x)`` without the conv's bias."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    shift = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return scale, shift


def _folded(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """``(w * scale, shift + b * scale)``; cached on the conv when no gradient is needed, keyed by the versions of
    every tensor it depends on (an in-place update, e.g. loading a checkpoint, invalidates it)."""
    needs_grad = _needs_grad(conv)
    tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    cached = getattr(conv, "_folded_cache", None)
    if not needs_grad and cached is not None and cached[0] == key:
        return cached[1], cached[2]
    scale, shift = _affine(conv, bn)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    if not needs_grad:
        conv._folded_cache = (key, weight, shift)
    return weight, shift


def _block(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision ``BasicBlock`` or ``Bottleneck`` with :func:`conv_bn` (same computation as its forward)."""
    out = torch.relu_(conv_bn(block.conv1, block.bn1, x))
    if isinstance(block, torchvision.models.resnet.Bottleneck):
        out = torch.relu_(conv_bn(block.conv2, block.bn2, out))
        out = conv_bn(block.conv3, block.bn3, out)
    else:
        out = conv_bn(block.conv2, block.bn2, out)
    identity = x if block.downsample is None else conv_bn(block.downsample[0], block.downsample[1], x)
    return torch.relu_(out.add_(identity))


def _stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    for block in stage:
        x = _block(block, x)
    return x

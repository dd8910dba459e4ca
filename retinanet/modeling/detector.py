"""RetinaNet (paper section 4): backbone -> dense heads on every pyramid level -> outputs and their anchors; in
training the criterion (:mod:`retinanet.modeling.criterion`: matching, targets, normalizer, losses) turns them into
the loss, at inference post-processing (:mod:`retinanet.modeling.postprocess`) into detections.

The model composes small collaborators built from the run config by :func:`build_model`; only the ``build_*``
functions read the config. Shapes: N images, R anchors per image (all levels), K classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from retinanet.config import RunConfig, TestConfig
from retinanet.modeling.anchors import AnchorGenerator, build_anchor_generator
from retinanet.modeling.backbone import build_backbone
from retinanet.modeling.criterion import DenseOutputs, RetinaNetCriterion, Targets, build_criterion
from retinanet.modeling.head import RetinaNetHead, build_head
from retinanet.modeling.matching import BACKGROUND, IGNORE
from retinanet.modeling.postprocess import postprocess


class RetinaNet(nn.Module):
    """The one-stage detector of Fig. 3.

    Args (keyword-only):
        backbone: images ``[N, 3, H, W]`` -> P3..P7 features.
        head: features -> logits ``[N, R, K]``, deltas ``[N, R, 4]``.
        anchors: the anchor generator.
        criterion: the training loss of the outputs (:class:`~retinanet.modeling.criterion.RetinaNetCriterion`).
        test: inference settings (:func:`~retinanet.modeling.postprocess.postprocess`).

    Its buffer ``fg_ema`` is the ``ema`` normalizer's moving fg count, which the criterion updates: training state
    saved with the weights (state_dict key ``fg_ema``), as checkpoints have always held it.
    """

    def __init__(self, *, backbone: nn.Module, head: RetinaNetHead, anchors: AnchorGenerator,
                 criterion: RetinaNetCriterion, test: TestConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.anchors = anchors
        self.criterion = criterion
        self.test_cfg = test
        # detectron2's moving average of the foreground count (loss.normalizer == "ema"); 100 as in detectron2.
        self.register_buffer("fg_ema", torch.tensor(100.0), persistent=True)

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def dense(self, images: Tensor) -> DenseOutputs:
        """Head outputs and their anchors: logits ``[N, R, K]``, deltas ``[N, R, 4]``, anchors ``[R, 4]``, and the
        number of anchors on each level."""
        features = self.backbone(images)
        logits, deltas = self.head(features)
        shapes = [tuple(f.shape[-2:]) for f in features]
        return DenseOutputs(logits, deltas, self.anchors(shapes, images.device), self.anchors.level_sizes(shapes))

    def forward(self, images: Tensor, targets: Targets | None = None
                ) -> DenseOutputs | dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training: the :meth:`dense` outputs, which the training loop gives to :attr:`criterion`; with
        ``targets``, the criterion's losses of them in one call. Evaluation: :meth:`predict` over the full padded
        size."""
        if not self.training:
            return self.predict(images, [tuple(images.shape[-2:])] * images.shape[0])
        outputs = self.dense(images)
        return outputs if targets is None else self.criterion(outputs, targets, fg_ema=self.fg_ema)

    @torch.no_grad()
    def predict(self, images: Tensor, image_sizes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """Detections per image (see :func:`retinanet.modeling.postprocess.postprocess`), boxes in input pixels."""
        logits, deltas, anchors, level_sizes = self.dense(images)
        return postprocess(logits, deltas, anchors, level_sizes, image_sizes, self.test_cfg)

    @torch.no_grad()
    def anchor_outputs(self, images: Tensor, targets: Targets) -> dict[str, Tensor]:
        """Per-anchor logits and assignment, for the loss distributions of Fig. 4.

        Returns:
            ``logits [N, R, K]`` (float32) and ``labels [N, R]``: the GT class (>= 0) for fg anchors,
            BACKGROUND (-1) or IGNORE (-2).
        """
        outputs = self.dense(images)
        return {"logits": outputs.logits.float(), "labels": self.criterion.match(outputs.anchors, targets).labels()}

    # ----------------------------------------------------------------------------------------------------------
    # The criterion's parts through the model, for callers that hold only the model (tests, benchmarks, tools)

    def losses(self, images: Tensor, targets: Targets) -> dict[str, Tensor]:
        """The criterion's losses of a batch (:meth:`RetinaNetCriterion.__call__`), in any mode."""
        return self.criterion(self.dense(images), targets, fg_ema=self.fg_ema)

    def losses_from_outputs(self, logits: Tensor, deltas: Tensor, anchors: Tensor, targets: Targets
                            ) -> dict[str, Tensor]:
        """:meth:`losses` given the head outputs ``logits [N, R, K]``, ``deltas [N, R, 4]`` and ``anchors [R, 4]``."""
        return self.criterion(DenseOutputs(logits, deltas, anchors, []), targets, fg_ema=self.fg_ema)

    def assign(self, anchors: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor]:
        """matched ``[N, R]`` (GT index, or BACKGROUND / IGNORE), the matched GT box ``[N, R, 4]`` and class ``[N, R]``
        of each anchor (:meth:`RetinaNetCriterion.match`)."""
        return tuple(self.criterion.match(anchors, targets)[:3])

    def assign_with_demoted(self, anchors: Tensor, targets: Targets) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:meth:`assign`, and the ``[N, R]`` bool mask of the anchors the ``detectron`` low-quality rule made
        foreground and sent back to background."""
        return tuple(self.criterion.match(anchors, targets))

    @property
    def loss_cfg(self) -> RetinaNetCriterion:
        """The criterion, whose settings carry ``LossConfig``'s names (``normalizer``, ``sampling``, ...)."""
        return self.criterion

    @property
    def cls_loss(self):
        """The criterion's elementwise classification loss."""
        return self.criterion.cls_loss

    @property
    def box_loss(self):
        """The criterion's elementwise box loss."""
        return self.criterion.box_loss


def build_model(cfg: RunConfig) -> RetinaNet:
    """RetinaNet for a run config: its parts from their ``build_*`` functions, the only readers of the model, anchor,
    matcher, loss and test configs."""
    anchors = build_anchor_generator(cfg.anchors)
    return RetinaNet(
        backbone=build_backbone(cfg.model),
        head=build_head(cfg.model, anchors.num_anchors),
        anchors=anchors,
        criterion=build_criterion(cfg),
        test=cfg.test,
    )


__all__ = ["BACKGROUND", "IGNORE", "DenseOutputs", "RetinaNet", "build_model"]

"""The detector of the paper's section 4, one module per part of Fig. 3 and section 4.1:

- ``backbone``: ResNet + FPN, P3-P7;
- ``head``: the classification and box subnets, and the prior init of the classification bias;
- ``anchors``: the 9 anchors per location on each pyramid level;
- ``matching``: anchor to ground-truth assignment (IoU >= .5 foreground, < .4 background);
- ``boxes``: the R-CNN box parameterization (encode / decode);
- ``losses``: the focal loss (eq. 5), FL* (appendix A) as the paper writes them, the box losses, and the builders
  the config selects them with; ``focal_kernels``: the fused kernels that compute FL and FL* in training;
- ``ohem``: online hard example mining, Table 1d's baseline;
- ``criterion``: the training loss of a batch: matching, targets, the normalizer (counted once) and both losses;
- ``postprocess``: inference (top-k per level, threshold, NMS);
- ``detector``: :class:`RetinaNet`, which composes them (its forward gives the head outputs, the criterion their
  loss), and :func:`build_model`, which with ``build_criterion`` is the only reader of the config.
"""

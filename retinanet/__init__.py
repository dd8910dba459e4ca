"""RetinaNet and the focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017), reproduced.

The detector library behind the study: ``python -m retinanet --help`` lists the command-line entry points that the
Snakemake workflow calls. Modules hold one concept each (see README.md, "Layout").
"""

__version__ = "0.1.0"

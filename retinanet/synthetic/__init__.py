"""The embedded detection dataset that stands in for COCO at the small scales: one image (``scene``) and the COCO
files written from many (``generator``, ``make-dataset``)."""

"""COCO-format data: the annotation file (``coco_json``), the dataset, its transforms and loaders (``dataset``),
the resumable training order (``sampler``) and the COCO 2017 layout check (``coco_layout``, ``check-coco``)."""

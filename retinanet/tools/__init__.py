"""Command-line tools around the detector: the MSRA weight conversion (``caffe2_weights``, ``convert-weights``),
backbone pretraining on the embedded data (``pretrain``), anchor statistics of a dataset (``anchor_stats``), a study's
bill before launching it (``plan``) and the synthetic training step it measures (``probe``)."""

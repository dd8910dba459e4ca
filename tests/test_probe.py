"""retinanet.tools.probe: the random stand-in for pretrained weights is a real file while its process runs and is
removed with its folder when the process exits (each is 45-100 MB; a test suite's processes once left gigabytes in
the temporary folder and filled a CI machine's disk)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torchvision

CHILD = """
import torch
from retinanet.modeling.backbone import STYLE_KEY
from retinanet.tools.probe import random_backbone_file
path = random_backbone_file(18)
assert random_backbone_file(18) == path  # one file per depth and process
state = torch.load(path, weights_only=True)
print(path, state[STYLE_KEY], len(state["model"]), flush=True)
"""


def test_random_backbone_file_is_removed_when_its_process_exits(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    path, style, keys = out.stdout.split()
    assert Path(path).parent.parent == tmp_path and style == "torchvision"
    assert int(keys) == len(torchvision.models.resnet18().state_dict())
    assert not Path(path).parent.exists()
    assert list(tmp_path.iterdir()) == []

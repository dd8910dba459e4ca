"""Shared test setup: one torch thread (2-core machines run several jobs at once) and a tiny embedded dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedded COCO-format dataset (read-only for tests): ROOT/{train,val}/*.png and
    ROOT/annotations/instances_{train,val}.json, 6 train and 3 val images of 64x64 px, seed 0."""
    from retinanet.synthetic.generator import DatasetSpec, make_dataset

    root = tmp_path_factory.mktemp("synthetic") / "data"
    make_dataset(root, seed=0, splits={"train": 6, "val": 3}, spec=DatasetSpec(image_size=64))
    return root

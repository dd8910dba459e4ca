"""TF32 switches: set from ``allow_tf32`` both ways, recorded in provenance (``device.tf32``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from retinanet import provenance
from retinanet.config import RunConfig, from_dict
from retinanet.precision import set_tf32, tf32_state


@pytest.fixture(autouse=True)
def _restore_tf32() -> Iterator[None]:
    """The switches are process-wide: give the next test torch's values back."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.mark.parametrize("allow", [True, False])
def test_set_tf32_sets_both_switches(allow):
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not allow
    assert set_tf32(allow) == {"matmul": allow, "cudnn": allow} == tf32_state()
    assert torch.backends.cuda.matmul.allow_tf32 is allow and torch.backends.cudnn.allow_tf32 is allow


@pytest.mark.parametrize("allow", [True, False])
def test_provenance_records_the_switches_in_effect(allow):
    set_tf32(allow)
    assert provenance.device_info(torch.device("cpu"))["tf32"] == {"matmul": allow, "cudnn": allow}
    assert provenance.collect(torch.device("cpu"))["device"]["tf32"] == {"matmul": allow, "cudnn": allow}


def test_the_paper_default_is_fp32_without_tf32():
    assert RunConfig().allow_tf32 is False
    assert from_dict({"allow_tf32": True}).allow_tf32 is True
    with pytest.raises(ValueError, match="allow_tf32: expected true/false"):
        from_dict({"allow_tf32": "yes"})

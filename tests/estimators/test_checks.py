"""Input helpers of polab.estimators.checks."""

import numpy as np
import pytest
import torch

from polab.estimators.checks import as_tensor


def test_python_floats_become_float64_without_float32_rounding():
    t = as_tensor([0.9, 0.1], name="x")
    assert t.dtype == torch.float64
    # exact equality: the Python doubles themselves, not their float32 roundings (0.8999999761...)
    assert t.tolist() == [0.9, 0.1]
    assert as_tensor([0.1], name="x", dtype=torch.float64).item() == 0.1


def test_integers_and_bools_keep_their_kind_and_tensors_are_not_copied():
    assert as_tensor([1, 2], name="ids").dtype == torch.int64
    assert as_tensor([True, False], name="mask").dtype == torch.bool
    x = torch.zeros(3, dtype=torch.float32)
    assert as_tensor(x, name="x") is x
    assert as_tensor(np.zeros(2, dtype=np.float32), name="x").dtype == torch.float64


def test_unconvertible_input_names_the_argument():
    with pytest.raises(ValueError, match="rewards"):
        as_tensor([[1.0, 2.0], [3.0]], name="rewards")

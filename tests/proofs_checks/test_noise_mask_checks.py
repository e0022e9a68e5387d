"""proofs_checks.noise_mask_checks: the enumeration and Monte Carlo checks pass, and the enumeration has power."""

import numpy as np
import torch

from polab.proofs_checks.noise_mask_checks import check_beta_monte_carlo, check_by_enumeration


def test_enumeration_check_passes_and_separates_the_authors_reduction():
    r = check_by_enumeration(n=2, generator=torch.Generator().manual_seed(1))
    assert r.passed
    assert abs(r.ratio["batch-mean"] - 0.5) < 1e-9 and abs(r.ratio["authors-sum"] - 0.5) < 1e-9  # 1 - 1/n and 1/n, n = 2
    assert r.residual["authors-logsumexp"] > 1e-3  # not parallel to the gradient: the check can tell the two apart
    np.testing.assert_allclose(r.expected["leave-one-out"], r.exact, rtol=1e-10, atol=1e-12)  # float64 round-off


def test_beta_monte_carlo_check_passes():
    # 5 SE per coordinate (two-sided normal tail 5.7e-7; 6 coordinates)
    m = check_beta_monte_carlo(num_samples=10000, generator=torch.Generator().manual_seed(2))
    assert m.passed, m.max_z

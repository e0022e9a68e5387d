"""The digits-modalities proxy: each modality is the documented transformation of the resized digit."""

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from polab.scaled.data.digits_modalities import MODALITIES, make_digits_modalities, split_indices  # noqa: E402


def _resized(size):
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]
    return np.clip(torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy(), 0, 1)


def test_modalities_are_the_documented_transformations():
    d = make_digits_modalities(size=12, generator=np.random.default_rng(0))
    base = _resized(12)
    assert d.images.shape == (1797, 1, 12, 12) and d.images.dtype == np.float32
    assert d.labels.shape == (1797,) and set(np.unique(d.labels)) == set(range(10))
    assert d.images.min() >= 0 and d.images.max() <= 1
    counts = np.bincount(d.modality, minlength=4)
    assert counts.sum() == 1797 and counts.min() > 350  # uniform assignment: 449 expected per modality, sd ~18
    im = d.images[:, 0]
    plain, inv = d.modality == 0, d.modality == 1
    np.testing.assert_allclose(im[plain], base[plain], atol=1e-6)  # float32 round-off
    np.testing.assert_allclose(im[inv], 1 - base[inv], atol=1e-6)
    blur = d.modality == 2
    assert np.allclose(im[blur].reshape(blur.sum(), -1).max(1), 1.0, atol=1e-6)  # renormalised to peak 1
    noisy = d.modality == 3
    resid = im[noisy] - (0.35 + 0.3 * base[noisy])
    inside = (im[noisy] > 0) & (im[noisy] < 1)  # unclipped pixels carry N(0, 0.08^2) noise
    assert abs(resid[inside].std() - 0.08) < 0.005  # ~28k pixels: the sd estimate's sd is ~3e-4
    # background levels differ by modality: the heterogeneity the proxy is for
    means = [im[d.modality == k].mean() for k in range(4)]
    assert means[1] > 0.6 > means[0]


def test_reproducible_and_subset_of_modalities():
    a = make_digits_modalities(generator=np.random.default_rng(3), modalities=("plain", "inverted"))
    b = make_digits_modalities(generator=np.random.default_rng(3), modalities=("plain", "inverted"))
    assert np.array_equal(a.images, b.images) and a.modality_names == ("plain", "inverted")
    assert set(np.unique(a.modality)) == {0, 1}


def test_split_is_a_partition():
    tr, te = split_indices(100, [60, 30], generator=np.random.default_rng(0))
    assert len(tr) == 60 and len(te) == 30 and not set(tr) & set(te)


@pytest.mark.parametrize("kw, match", [({"size": 4}, "size"), ({"modalities": ("xray",)}, "modalities"),
                                       ({"blur_sigma": 0.0}, "blur_sigma"), ({"noise_std": -1.0}, "noise_std")])
def test_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        make_digits_modalities(generator=np.random.default_rng(0), **kw)
    with pytest.raises(ValueError, match="split sizes"):
        split_indices(10, [8, 8], generator=np.random.default_rng(0))


def test_modality_names_are_documented():
    assert MODALITIES == ("plain", "inverted", "blurred", "low-contrast-noisy")

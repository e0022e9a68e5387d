"""A heterogeneous "multi-modality" image set built from scikit-learn's digits: a **proxy**.

It stands in for the heterogeneous multi-modal, multi-organ biomedical sets of
Yavuz & Yang (RadImageNet: CT, MR and ultrasound images of many organs), which
cannot be downloaded here. The 1,797 8x8 digit images that ship with
scikit-learn (``sklearn.datasets.load_digits``, grey levels 0-16, 10 classes)
are scaled to [0, 1], resized to ``size`` x ``size`` pixels (bilinear, through
``torch.nn.functional.interpolate``), and each image is given exactly one
"modality" (uniformly at random from ``generator``), i.e. one fixed
transformation of its intensities:

========================  ==========================================================  ==============================
name                      transformation of x in [0, 1]                               stands in for
========================  ==========================================================  ==============================
``plain``                 x                                                           a reference modality
``inverted``              1 - x                                                       reversed contrast polarity
                                                                                      (e.g. T1 vs T2 weighting)
``blurred``               Gaussian blur, standard deviation ``blur_sigma`` pixels     a low-resolution modality
                          (reflect edges), then x / max(x) per image                  (e.g. ultrasound)
``low-contrast-noisy``    clip(0.35 + 0.3 x + N(0, ``noise_std``^2), 0, 1)            a noisy, low dynamic range
                                                                                      modality (e.g. low-dose CT)
========================  ==========================================================  ==============================

The label is the digit; the modality index is returned too (a policy may be
conditioned on it, and accuracy is reported per modality). The label task is
the same across modalities, while low-level statistics (background level,
polarity, sharpness, noise) differ: the property of the paper's data that the
noise mask is meant to address. Nothing about anatomy or real imaging physics
carries over; results on this proxy say nothing quantitative about RadImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MODALITIES", "DigitsModalities", "make_digits_modalities", "split_indices"]

MODALITIES = ("plain", "inverted", "blurred", "low-contrast-noisy")


@dataclass(frozen=True)
class DigitsModalities:
    """The proxy data set.

    Attributes
    ----------
    images : ndarray [n, 1, size, size], float32 in [0, 1]
    labels : ndarray [n], int64 in 0..9
    modality : ndarray [n], int64 index into ``modality_names``
    modality_names : tuple of str
    """

    images: np.ndarray
    labels: np.ndarray
    modality: np.ndarray
    modality_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(im, sigma=sigma, mode="reflect") for im in x])


def make_digits_modalities(*, size: int = 16, modalities=MODALITIES, blur_sigma: float = 1.5, noise_std: float = 0.08,
                           generator: np.random.Generator) -> DigitsModalities:
    """Build the proxy set (all 1,797 digits, one modality each).

    Parameters
    ----------
    size : int
        Side of the resized images, >= 8.
    modalities : sequence of str
        Names from :data:`MODALITIES` (at least one, no repeats).
    blur_sigma : float
        Blur of the ``blurred`` modality in pixels of the resized image, > 0.
    noise_std : float
        Noise of the ``low-contrast-noisy`` modality, >= 0.
    generator : numpy.random.Generator
        Draws the modality of each image and the noise.

    Returns
    -------
    DigitsModalities
    """
    import torch
    from sklearn.datasets import load_digits  # ships with scikit-learn (extra "control"); never downloads

    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (the digits are 8x8); got {size!r}.")
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if not modalities or unknown or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {MODALITIES}; got {modalities!r}.")
    if not (np.isfinite(blur_sigma) and blur_sigma > 0):
        raise ValueError(f"blur_sigma must be a finite number > 0; got {blur_sigma!r}.")
    if not (np.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a finite number >= 0; got {noise_std!r}.")
    d = load_digits()
    x = d.images.astype(np.float32) / 16.0  # [n, 8, 8] in [0, 1]
    if size != 8:
        x = torch.nn.functional.interpolate(torch.from_numpy(x)[:, None], size=(size, size), mode="bilinear",
                                            align_corners=False)[:, 0].numpy()
    x = np.clip(x, 0.0, 1.0)
    n = x.shape[0]
    mod = generator.integers(len(modalities), size=n)
    out = np.empty_like(x)
    for k, name in enumerate(modalities):
        sel = mod == k
        xs = x[sel]
        if name == "plain":
            y = xs
        elif name == "inverted":
            y = 1.0 - xs
        elif name == "blurred":
            y = _blur(xs, blur_sigma)
            y = y / np.maximum(y.reshape(len(y), -1).max(1), 1e-6)[:, None, None]
        else:  # low-contrast-noisy
            y = 0.35 + 0.3 * xs + noise_std * generator.standard_normal(xs.shape)
        out[sel] = np.clip(y, 0.0, 1.0)
    return DigitsModalities(images=out[:, None].astype(np.float32), labels=d.target.astype(np.int64),
                            modality=mod.astype(np.int64), modality_names=modalities)


def split_indices(n: int, sizes, *, generator: np.random.Generator) -> list[np.ndarray]:
    """A random partition of ``range(n)`` into disjoint index sets of the given sizes (their sum <= n)."""
    sizes = [int(s) for s in sizes]
    if any(s < 1 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"split sizes must be >= 1 and sum to at most {n} (the data set's size); got {sizes}.")
    perm = generator.permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(perm[start:start + s]))
        start += s
    return out

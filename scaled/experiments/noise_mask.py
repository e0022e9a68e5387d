"""``polab run noise-mask``: classifier pretraining with a policy-gradient-driven noise mask vs random noise vs none.

Yavuz & Yang (arXiv 2406.14568) pretrain a classifier on images multiplied by
a noise mask drawn from a conditional policy (a light-weight network that
outputs per-cell Beta parameters), train the policy by REINFORCE on the
classifier's cross-entropy, then discard the policy and fine-tune the
"heated" classifier normally. The claim tested here, modestly: fine-tuning
after mask pretraining is no worse, and sometimes better, than conventional
training at the same number of epochs.

Data: **a proxy**. RadImageNet cannot be downloaded; scikit-learn's digits
are made heterogeneous by per-"modality" intensity transformations
(:mod:`polab.scaled.data.digits_modalities`: plain, inverted, blurred,
low-contrast-noisy; one modality per image, resized to ``--size`` pixels).

Arms (each seed: the same split, the same classifier initialisation and the
same minibatch order for every arm, so the comparison is paired):

* ``none``: conventional training (no mask) in both stages;
* ``random``: pretraining on images times a mask drawn from a fixed
  Beta(e^a0, e^b0) per cell, (a0, b0) ~ U(0, 1) per cell (the authors'
  initial ``base_alpha``/``base_beta``), i.e. the policy before any learning;
* ``learned``: the mask policy, trained by REINFORCE
  (:func:`polab.estimators.noise_mask.reinforce_mask_loss`, reward minus the
  per-sample cross-entropy on the masked image, leave-one-out baseline), or
  with ``--estimator authors`` by the authors' joint objective
  (:func:`polab.estimators.noise_mask.authors_policy_loss`).

Both stages for every arm: stage 1 ("pretraining", ``--pretrain-epochs``, SGD
``--lr`` with momentum 0.9, weight decay 1e-4, step decay x0.1 every third of
the stage, as the authors' StepLR(30, 0.1) over 90 epochs; the policy: SGD
at ``--policy-lr`` with a cosine schedule; the authors use ``--lr``/10, which with
the ~1000 times fewer steps here leaves the policy almost where it started); stage 2 ("fine-tuning",
``--finetune-epochs``, plain images, fresh SGD at ``--finetune-lr`` with a
linear warm-up from 1% over ``--finetune-warmup-epochs``, the authors'
``_normal`` recipe scaled down). Accuracy is measured on clean held-out
images (the policy is not used at inference).

Policy network (reconstructed from ``_policy_gradient/create_model.py`` @
ece96ae0880a27ad439f0a77aedf909ba7b4e0dd, scaled down): a small CNN feature
extractor (the authors: timm ``resnet10t``), optionally concatenated with the
modality one-hot (``--condition image+modality``), two heads (Linear-BN-ReLU-Linear)
giving per-cell log-concentrations (clamped to [-8, 8] here, so that a diverging
policy cannot overflow the Beta sampler); the output is blended with running bases,
``log alpha = 0.9 base_alpha + 0.1 head(x)``, and the bases follow the batch
mean of the heads by an EMA of 0.99 (the authors' constants, ``--blend``,
``--base-ema``). Mask: per-cell Beta draw, nearest-neighbour upsampling to the
image and a Gaussian blur (:func:`polab.estimators.noise_mask.upsample_mask`).

Departures from the authors' code (stated, not hidden):

* the policy is trained with a per-sample reward and a leave-one-out baseline
  (``--estimator reinforce``, default) instead of the batch-mean cross-entropy
  times the log-sum-exp of the cell log-densities, whose expected direction is
  not the gradient (shown by enumeration in tests/estimators/test_noise_mask.py);
  ``--estimator authors`` reproduces their policy objective;
* the classifier is trained on the plain mean cross-entropy; in the authors' single
  loss its gradient is also multiplied by the batch mean of the log-sum-exp term;
* the sign of the reward (the policy lowers the classifier's loss) follows the code;
  the paper's text was not available (**[reconstructed]**); ``--reward ce`` gives the
  adversarial variant (the policy raises the loss);
* a small CNN classifier on 16x16 proxy images instead of ResNets on 224x224
  RadImageNet crops; far fewer epochs.

Measured (``polab run noise-mask``, cpu preset, 10 seeds, 2026-12-04; about 4 minutes
of CPU time on one core, 15 minutes of wall time on a shared, loaded 2-core machine):
final clean test accuracy no noise 76.62 +- 0.88 %, random Beta mask 73.05 +- 1.32 %,
learned mask 72.75 +- 1.66 % (mean, 95% t interval over seeds). Paired over seeds:
learned - none -3.87 +- 1.91 points (paired t p = 0.001, Wilcoxon p = 0.002, 0 wins
in 10), learned - random -0.30 +- 1.45 (p = 0.65, 5 wins in 10). The learned policy
did move (mean mask 0.50 -> 0.62, brighter: the cooperative reward; per-modality mean
masks differ by up to 0.085) and its intermediate model is better than the random
arm's on clean images (57.8 vs 51.8 %), but after fine-tuning the advantage is gone
and both mask arms are below conventional training, most on the low-contrast-noisy
modality (40 vs 49 %). ``--estimator authors --arms none learned --seeds 5``:
learned - none -3.13 +- 2.46 points (p = 0.024); with that objective the mean mask
stays at 0.50. So on this proxy and at this scale the claim ("no worse, sometimes
better") is not reproduced; nothing here says how it fares on RadImageNet.

Presets: ``cpu`` (default: 10 seeds, see above),
``quick`` (a smoke run of a few seconds), ``gpu`` (the proxy at a larger
scale: 64x64 images, grid 16, blur kernel 13 and sigma 6 as the authors, a
wider classifier, 20 seeds, 60+10 epochs).

Paper scale (documented, not runnable here: polab has no RadImageNet loader,
and the data set cannot be downloaded): RadImageNet (165 classes), classifier
timm ``resnet10t``/``resnet18``/``resnet50`` at 224x224, policy feature
extractor ``resnet10t``, grid 64, blur kernel 13 / sigma 6, batch 32 per GPU on
8 GPUs, 90 epochs, SGD lr 0.1 momentum 0.9 weight decay 1e-4, StepLR(30, 0.1),
policy lr 0.01 with cosine annealing; fine-tuning 10 epochs, batch 64, lr 1e-3
with a linear warm-up over 7 epochs (the authors' README and
``get_args_parser.py``).

Run folder: ``config.json``, ``metrics.csv`` (one row per arm, seed, stage
and epoch), ``summary.json`` (final accuracy per arm: mean, 95% t interval,
per seed; paired differences with t intervals, paired t-test and Wilcoxon
signed-rank p-values; images per second), ``figures/accuracy.png``,
``figures/curves.png``, ``figures/masks.png``.

Example::

    polab run noise-mask --out runs/noise-mask                  # cpu preset, 10 seeds
    polab run noise-mask --preset quick --out /tmp/nm
    polab run noise-mask --preset gpu --out runs/noise-mask-gpu
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from tqdm import tqdm

from polab.estimators.noise_mask import authors_policy_loss, reinforce_mask_loss, sample_mask, upsample_mask

from ..checkpoint import atomic_write_text
from ..config import config_record, parse_config
from ..data.digits_modalities import MODALITIES, make_digits_modalities, split_indices
from ..logger import MetricLogger, read_metrics
from ..run_folder import check_config_values, check_device, prepare_run_folder

__all__ = ["NoiseMaskConfig", "PRESETS", "MaskPolicy", "run", "main"]

ARMS = ("none", "random", "learned")
#: |log concentration| <= 8: Beta concentrations in [3e-4, 3e3] (a departure from the authors' unbounded heads)
LOG_CONCENTRATION_BOUND = 8.0
COLUMNS = ["arm", "seed", "stage", "epoch", "train_ce", "test_acc", "mask_mean", "mask_std"]


@dataclass
class NoiseMaskConfig:
    """Options of ``polab run noise-mask`` (defaults: the ``cpu`` preset)."""

    arms: tuple[str, ...] = field(default=ARMS, metadata={"help": "methods compared", "choices": ARMS})
    seeds: int = field(default=10, metadata={"help": "independent seeds (split, initialisation, batch order), >= 2 for the tests"})
    seed: int = field(default=0, metadata={"help": "first seed"})
    train_size: int = field(default=500, metadata={"help": "training images (of 1797)"})
    test_size: int = field(default=600, metadata={"help": "held-out test images"})
    size: int = field(default=16, metadata={"help": "image side in pixels (digits are resized from 8x8)"})
    modalities: tuple[str, ...] = field(default=MODALITIES, metadata={"help": "proxy modalities", "choices": MODALITIES})
    grid: int = field(default=8, metadata={"help": "mask cells per side"})
    kernel_size: int = field(default=5, metadata={"help": "mask blur kernel (odd; 0: no blur)"})
    blur_sigma: float = field(default=2.0, metadata={"help": "mask blur standard deviation in pixels"})
    width: int = field(default=16, metadata={"help": "classifier channels (first layer)"})
    policy_width: int = field(default=8, metadata={"help": "policy feature-extractor channels (first layer)"})
    pretrain_epochs: int = field(default=30, metadata={"help": "stage 1 epochs (mask or not)"})
    finetune_epochs: int = field(default=10, metadata={"help": "stage 2 epochs (plain images, every arm)"})
    finetune_warmup_epochs: int = field(default=7, metadata={"help": "linear warm-up epochs of stage 2 (from 1%)"})
    batch_size: int = field(default=32, metadata={"help": "minibatch size"})
    lr: float = field(default=0.05, metadata={"help": "stage 1 classifier learning rate (policy: lr / 10)"})
    finetune_lr: float = field(default=0.005, metadata={"help": "stage 2 learning rate"})
    policy_lr: float | None = field(default=0.05, metadata={
        "help": "policy learning rate (none: --lr / 10, the authors' ratio; the default is 10x that, because the policy "
                "gets about 1000 times fewer steps here than in the authors' runs and barely moves at lr / 10)"})
    momentum: float = 0.9
    weight_decay: float = 1e-4
    estimator: Literal["reinforce", "authors"] = field(
        default="reinforce", metadata={"help": "policy objective: per-sample REINFORCE with a baseline, or the authors' joint loss"})
    baseline: Literal["leave-one-out", "batch-mean", "none"] = field(
        default="leave-one-out", metadata={"help": "REINFORCE baseline (estimator reinforce)"})
    reward: Literal["neg-ce", "ce"] = field(
        default="neg-ce", metadata={"help": "policy reward: minus the cross-entropy (authors' sign) or plus it (adversarial)"})
    condition: Literal["image", "image+modality"] = field(default="image", metadata={"help": "what the mask policy sees"})
    blend: float = field(default=0.9, metadata={"help": "weight of the running base in the policy output (authors 0.9)"})
    base_ema: float = field(default=0.99, metadata={"help": "EMA of the running base (authors 0.99)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    out: str = field(default="runs/noise-mask", metadata={"help": "run folder"})
    overwrite: bool = field(default=False, metadata={"help": "write into a non-empty --out"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})


PRESETS = {
    "cpu": {},
    "quick": {"seeds": 2, "train_size": 96, "test_size": 96, "pretrain_epochs": 2, "finetune_epochs": 1,
              "finetune_warmup_epochs": 1, "width": 8},
    "gpu": {"seeds": 20, "train_size": 1000, "test_size": 797, "size": 64, "grid": 16, "kernel_size": 13, "blur_sigma": 6.0,
            "width": 64, "policy_width": 16, "pretrain_epochs": 60, "finetune_epochs": 10, "device": "auto"},
}


# ---------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------
class Classifier(nn.Module):
    """Three 3x3 convolutions (stride 1, 2, 2) with batch norm and ReLU, global average pooling, a linear layer."""

    def __init__(self, width: int, num_classes: int = 10):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MaskPolicy(nn.Module):
    """Conditional mask policy: per-cell Beta log-concentrations blended with running bases (the authors' MaskGenerator).

    ``forward(x, modality_onehot)`` -> (log_alpha, log_beta), each [batch, cells]:
    ``blend * base + (1 - blend) * head(features)``; in training mode the bases move by
    ``base <- ema * base + (1 - ema) * mean_batch(head)`` (detached), as in the authors' code.
    """

    def __init__(self, cells: int, *, width: int, num_modalities: int, condition: str, blend: float, base_ema: float,
                 generator: torch.Generator):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.use_modality = condition == "image+modality"
        d = 2 * w + (num_modalities if self.use_modality else 0)
        hidden = max(32, 2 * d)

        def head():
            return nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, cells))

        self.alpha_head, self.beta_head = head(), head()
        self.blend, self.base_ema = float(blend), float(base_ema)
        # the authors' initial bases: U(0, 1) per cell
        self.register_buffer("base_alpha", torch.rand(1, cells, generator=generator))
        self.register_buffer("base_beta", torch.rand(1, cells, generator=generator))

    def forward(self, x: torch.Tensor, modality_onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        if self.use_modality:
            h = torch.cat([h, modality_onehot], 1)
        ha, hb = self.alpha_head(h), self.beta_head(h)
        # clamp (not in the authors' code): keeps exp(log alpha) finite in float32 when a large --policy-lr diverges
        la = (self.blend * self.base_alpha + (1 - self.blend) * ha).clamp(-LOG_CONCENTRATION_BOUND, LOG_CONCENTRATION_BOUND)
        lb = (self.blend * self.base_beta + (1 - self.blend) * hb).clamp(-LOG_CONCENTRATION_BOUND, LOG_CONCENTRATION_BOUND)
        if self.training:
            with torch.no_grad():
                self.base_alpha.mul_(self.base_ema).add_((1 - self.base_ema) * ha.mean(0, keepdim=True))
                self.base_beta.mul_(self.base_ema).add_((1 - self.base_ema) * hb.mean(0, keepdim=True))
        return la, lb


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
def _check(cfg: NoiseMaskConfig) -> None:
    check_config_values(cfg, positive_ints=("seeds", "train_size", "test_size", "size", "grid", "width", "policy_width",
                                            "pretrain_epochs", "finetune_epochs", "batch_size"),
                        nonneg_ints=("seed", "finetune_warmup_epochs", "kernel_size"),
                        positive_floats=("lr", "finetune_lr", "policy_lr", "blur_sigma"), nonneg_floats=("momentum", "weight_decay"),
                        nonempty=("arms", "modalities"))
    for name, vals, allowed in (("arms", cfg.arms, ARMS), ("modalities", cfg.modalities, MODALITIES)):
        bad = [v for v in vals if v not in allowed]
        if bad or len(set(vals)) != len(vals):
            raise ValueError(f"--{name} takes distinct values from {', '.join(allowed)}; got {' '.join(map(str, vals))}.")
    if cfg.train_size + cfg.test_size > 1797:
        raise ValueError(f"--train-size + --test-size must be at most 1797 (the digits set); got {cfg.train_size} + {cfg.test_size}.")
    if cfg.size < 8:
        raise ValueError(f"--size must be >= 8 (the digits are 8x8); got {cfg.size}.")
    if cfg.grid > cfg.size:
        raise ValueError(f"--grid ({cfg.grid}) must be at most --size ({cfg.size}).")
    if cfg.kernel_size not in (0, 1) and (cfg.kernel_size % 2 == 0 or cfg.kernel_size // 2 >= cfg.size):
        raise ValueError(f"--kernel-size must be 0 (no blur) or odd with kernel_size // 2 < --size; got {cfg.kernel_size}.")
    if cfg.batch_size < 2 or cfg.batch_size > cfg.train_size:
        raise ValueError(f"--batch-size must be in [2, --train-size] (the leave-one-out baseline needs 2); got {cfg.batch_size}.")
    for name in ("blend", "base_ema"):
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and 0.0 <= v < 1.0):
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1); got {v!r}.")
    if cfg.estimator not in ("reinforce", "authors"):
        raise ValueError(f"--estimator must be reinforce or authors; got {cfg.estimator!r}.")
    if cfg.baseline not in ("leave-one-out", "batch-mean", "none"):
        raise ValueError(f"--baseline must be leave-one-out, batch-mean or none; got {cfg.baseline!r}.")
    if cfg.reward not in ("neg-ce", "ce"):
        raise ValueError(f"--reward must be neg-ce or ce; got {cfg.reward!r}.")
    if cfg.condition not in ("image", "image+modality"):
        raise ValueError(f"--condition must be image or image+modality; got {cfg.condition!r}.")
    check_device(cfg.device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sgd(params, lr, cfg):
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@torch.no_grad()
def _evaluate(clf: Classifier, x: torch.Tensor, y: torch.Tensor, mod: torch.Tensor, n_mod: int) -> tuple[float, list[float]]:
    clf.eval()
    pred = torch.cat([clf(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])
    correct = (pred == y).double()
    per = [float(correct[mod == k].mean()) if bool((mod == k).any()) else math.nan for k in range(n_mod)]
    return float(correct.mean()), per


def _train_arm(arm: str, s: int, data: dict, cfg: NoiseMaskConfig, logger: MetricLogger, step: list, dev: torch.device) -> dict:
    """Both stages for one arm and seed; returns final accuracies and timings (and the policy for the figure)."""
    seed = cfg.seed + s
    n_mod = len(cfg.modalities)
    cells = cfg.grid * cfg.grid
    torch.manual_seed(seed)  # the script's one seeding point per (seed, arm): identical classifier init across arms
    clf = Classifier(cfg.width).to(dev)
    g_init = torch.Generator().manual_seed(10_000 + seed)
    policy = MaskPolicy(cells, width=cfg.policy_width, num_modalities=n_mod, condition=cfg.condition, blend=cfg.blend,
                        base_ema=cfg.base_ema, generator=g_init).to(dev)
    base_a0, base_b0 = policy.base_alpha.clone(), policy.base_beta.clone()  # the random arm's fixed parameters
    g_order = torch.Generator().manual_seed(20_000 + seed)  # same minibatch order for every arm
    g_mask = torch.Generator(device=dev).manual_seed(30_000 + seed)
    xtr, ytr, mtr = data["train"]
    xte, yte, mte = data["test"]
    onehot_tr = F.one_hot(mtr, n_mod).to(xtr.dtype)
    n = len(ytr)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = _sgd(clf.parameters(), cfg.lr, cfg)
    decay_every = max(1, cfg.pretrain_epochs // 3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_every, gamma=0.1)
    popt = _sgd(policy.parameters(), cfg.lr / 10.0 if cfg.policy_lr is None else cfg.policy_lr, cfg)
    psched = torch.optim.lr_scheduler.CosineAnnealingLR(popt, T_max=cfg.pretrain_epochs)
    sign = -1.0 if cfg.reward == "neg-ce" else 1.0
    images, seconds = 0, 0.0
    res = {}
    for stage, epochs in (("pretrain", cfg.pretrain_epochs), ("finetune", cfg.finetune_epochs)):
        if stage == "finetune":
            opt = _sgd(clf.parameters(), cfg.finetune_lr, cfg)
            warm = cfg.finetune_warmup_epochs
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.01 + 0.99 * e / warm if e < warm else 1.0)
        for epoch in range(epochs):
            clf.train()
            policy.train()
            perm = torch.randperm(n, generator=g_order).to(dev)
            ce_sum, m_sum, m_sq, m_count = 0.0, 0.0, 0.0, 0
            t0 = time.perf_counter()
            for k in range(steps_per_epoch):
                idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                if len(idx) < 2:
                    continue
                x, y = xtr[idx], ytr[idx]
                masked = stage == "pretrain" and arm != "none"
                if masked:
                    if arm == "learned":
                        la, lb = policy(x, onehot_tr[idx])
                    else:
                        la, lb = base_a0.expand(len(idx), cells), base_b0.expand(len(idx), cells)
                    smp = sample_mask(la, lb, family="beta", generator=g_mask)
                    up = upsample_mask(smp.mask, grid=cfg.grid, size=cfg.size, kernel_size=cfg.kernel_size, sigma=cfg.blur_sigma)
                    x = x * up
                    m_sum += float(up.sum())
                    m_sq += float((up ** 2).sum())
                    m_count += up.numel()
                ce = F.cross_entropy(clf(x), y, reduction="none")
                loss = ce.mean()
                if masked and arm == "learned":
                    if cfg.estimator == "reinforce":
                        loss = loss + reinforce_mask_loss(smp.log_prob, sign * ce.detach(), baseline=cfg.baseline)
                    else:
                        loss = loss + authors_policy_loss(smp.cell_log_prob, -sign * ce.detach().mean(), reduction="logsumexp")
                opt.zero_grad(set_to_none=True)
                popt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if masked and arm == "learned":
                    popt.step()
                ce_sum += float(ce.detach().sum())
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - t0
            images += n
            sched.step()
            if stage == "pretrain" and arm == "learned":
                psched.step()
            acc, per = _evaluate(clf, xte, yte, mte, n_mod)
            mean = m_sum / m_count if m_count else math.nan
            std = math.sqrt(max(m_sq / m_count - mean ** 2, 0.0)) if m_count else math.nan
            row = {"arm": arm, "seed": s, "stage": stage, "epoch": epoch, "train_ce": ce_sum / n, "test_acc": acc,
                   "mask_mean": mean, "mask_std": std}
            row.update({f"test_acc_{name}": a for name, a in zip(cfg.modalities, per)})
            logger.log(step[0], row)
            step[0] += 1
        res[f"{stage}_acc"] = acc
        res[f"{stage}_acc_per_modality"] = per
    res["images_per_second"] = images / seconds if seconds > 0 else math.nan
    if arm == "learned":
        res["policy"] = policy
    return res


def _data(s: int, cfg: NoiseMaskConfig, dev: torch.device) -> dict:
    rng = np.random.default_rng(cfg.seed + s)
    ds = make_digits_modalities(size=cfg.size, modalities=cfg.modalities, generator=rng)
    tr, te = split_indices(len(ds), [cfg.train_size, cfg.test_size], generator=rng)

    def part(ix):
        return (torch.as_tensor(ds.images[ix], device=dev), torch.as_tensor(ds.labels[ix], device=dev),
                torch.as_tensor(ds.modality[ix], device=dev))

    return {"train": part(tr), "test": part(te)}


# ---------------------------------------------------------------------------
# statistics, figures
# ---------------------------------------------------------------------------
def _mean_ci(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        return float(np.mean(x)), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))


def _paired(a, b) -> dict:
    """Paired comparison a - b over seeds: mean, 95% t interval, paired t-test and exact Wilcoxon signed-rank p."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean, half = _mean_ci(d)
    out = {"mean_difference": mean, "ci95_half_width": half, "per_seed": [float(v) for v in d],
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum()), "ties": int((d == 0).sum())}
    if len(d) >= 2 and np.any(d != 0):
        out["t_test_p"] = float(stats.ttest_rel(a, b).pvalue) if d.std(ddof=1) > 0 else (0.0 if mean != 0 else 1.0)
        out["wilcoxon_p"] = float(stats.wilcoxon(d, zero_method="wilcox").pvalue) if np.count_nonzero(d) >= 1 else 1.0
    else:
        out["t_test_p"] = out["wilcoxon_p"] = 1.0
    return out


def _figures(out: Path, cfg: NoiseMaskConfig, final: dict, rows: list[dict], mask_fig: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = {"none": "no noise", "random": "random Beta mask", "learned": f"learned mask ({cfg.estimator})"}
    est = "REINFORCE, LOO baseline" if cfg.estimator == "reinforce" else "authors' joint loss"
    # accuracy per arm, paired lines
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = np.arange(len(cfg.arms))
    per = np.array([final[a] for a in cfg.arms])  # [arms, seeds]
    for j in range(per.shape[1]):
        ax.plot(xs, 100 * per[:, j], color="grey", alpha=0.35, lw=0.8)
    for i, a in enumerate(cfg.arms):
        m, h = _mean_ci(per[i])
        ax.errorbar([i], [100 * m], yerr=[[100 * h]], fmt="o", capsize=6, ms=8, color=f"C{i}",
                    label=f"{label[a]}: {100 * m:.2f} +- {100 * h:.2f}")
    ax.set_xticks(xs, [label[a] for a in cfg.arms], fontsize=8)
    ax.set_ylabel("test accuracy after fine-tuning (%)")
    ax.set_title(f"digits-modalities proxy, {cfg.seeds} seeds (grey: same seed), mean and 95% t CI\n"
                 f"{cfg.pretrain_epochs}+{cfg.finetune_epochs} epochs, {cfg.train_size} train images, grid {cfg.grid}, {est}",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "figures" / "accuracy.png", dpi=110)
    plt.close(fig)
    # learning curves
    fig, ax = plt.subplots(figsize=(7, 4.2))
    total = cfg.pretrain_epochs + cfg.finetune_epochs
    for i, a in enumerate(cfg.arms):
        curve = np.full((cfg.seeds, total), np.nan)
        for r in rows:
            if r["arm"] == a:
                e = int(r["epoch"]) + (cfg.pretrain_epochs if r["stage"] == "finetune" else 0)
                curve[int(r["seed"]), e] = r["test_acc"]
        m = np.nanmean(curve, 0)
        h = np.array([_mean_ci(curve[:, e])[1] if cfg.seeds > 1 else 0.0 for e in range(total)])
        ep = np.arange(1, total + 1)
        ax.plot(ep, 100 * m, color=f"C{i}", label=label[a])
        ax.fill_between(ep, 100 * (m - h), 100 * (m + h), color=f"C{i}", alpha=0.2)
    ax.axvline(cfg.pretrain_epochs + 0.5, color="k", ls="--", lw=0.8, label="pretraining | fine-tuning")
    ax.set_xlabel("epoch")
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title(f"digits-modalities proxy: clean test accuracy, mean over {cfg.seeds} seeds, 95% t band\n"
                 f"stage 1 with the arm's mask (lr {cfg.lr}), stage 2 plain fine-tuning (lr {cfg.finetune_lr})", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "figures" / "curves.png", dpi=110)
    plt.close(fig)
    # masks of the learned policy per modality (first seed)
    if mask_fig is not None:
        names = cfg.modalities
        fig, axes = plt.subplots(3, len(names), figsize=(2.3 * len(names), 6.6), squeeze=False)
        for k, name in enumerate(names):
            ims = [(mask_fig["example"][k], "image"), (mask_fig["mean_mask"][k], "mean mask E[m]"),
                   (mask_fig["masked"][k], "image x drawn mask")]
            for r, (im, what) in enumerate(ims):
                ax = axes[r][k]
                h = ax.imshow(im, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]); ax.set_yticks([])
                ax.set_title(f"{name}\n{what}", fontsize=7)
        fig.colorbar(h, ax=axes, fraction=0.02)
        fig.suptitle(f"learned mask policy after pretraining (seed {cfg.seed}, condition {cfg.condition}); "
                     f"per-modality mean masks differ by up to {mask_fig['spread']:.3f}", fontsize=8)
        fig.savefig(out / "figures" / "masks.png", dpi=110)
        plt.close(fig)


@torch.no_grad()
def _mask_figure_data(policy: MaskPolicy, data: dict, cfg: NoiseMaskConfig, dev: torch.device) -> dict:
    policy.eval()
    x, _, mod = data["test"]
    n_mod = len(cfg.modalities)
    la, lb = policy(x, F.one_hot(mod, n_mod).to(x.dtype))
    al, be = la.exp(), lb.exp()
    mean_cells = al / (al + be)
    mean_mask = upsample_mask(mean_cells, grid=cfg.grid, size=cfg.size, kernel_size=cfg.kernel_size, sigma=cfg.blur_sigma)[:, 0]
    smp = sample_mask(la, lb, generator=torch.Generator(device=dev).manual_seed(cfg.seed))
    drawn = upsample_mask(smp.mask, grid=cfg.grid, size=cfg.size, kernel_size=cfg.kernel_size, sigma=cfg.blur_sigma)[:, 0]
    per_mod = []
    out = {"example": [], "mean_mask": [], "masked": []}
    for k in range(n_mod):
        sel = (mod == k).nonzero().flatten()
        if len(sel) == 0:
            blank = np.zeros((cfg.size, cfg.size))
            per_mod.append(torch.full((cfg.size, cfg.size), math.nan, device=dev))
            out["example"].append(blank); out["mean_mask"].append(blank); out["masked"].append(blank)
            continue
        i = int(sel[0])
        per_mod.append(mean_mask[sel].mean(0))
        out["example"].append(x[i, 0].cpu().numpy())
        out["mean_mask"].append(per_mod[-1].cpu().numpy())
        out["masked"].append((x[i, 0] * drawn[i]).cpu().numpy())
    stack = torch.stack(per_mod)
    spread = float(torch.nan_to_num(stack.amax(0) - stack.amin(0), nan=0.0).max())
    out["spread"] = spread
    out["overall_mean"] = float(mean_mask.mean())
    return out


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------
def run(cfg: NoiseMaskConfig) -> Path:
    """Run the experiment; returns the run folder (options checked first; ``cfg.out`` new or empty unless overwrite)."""
    _check(cfg)
    with prepare_run_folder(cfg.out, resume=False, overwrite=cfg.overwrite):
        return _run(cfg)


def _run(cfg: NoiseMaskConfig) -> Path:
    out = Path(cfg.out)
    dev = _device(cfg.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    logger = MetricLogger(out, config=config_record(cfg), backends=("csv",), columns=COLUMNS)
    final = {a: [] for a in cfg.arms}
    inter = {a: [] for a in cfg.arms}
    per_mod = {a: [] for a in cfg.arms}
    speed = {a: [] for a in cfg.arms}
    step = [0]
    mask_fig = None
    jobs = [(s, a) for s in range(cfg.seeds) for a in cfg.arms]
    data, data_seed = None, None
    for s, a in tqdm(jobs, desc="noise-mask", disable=not cfg.progress):
        if data_seed != s:
            data, data_seed = _data(s, cfg, dev), s
        r = _train_arm(a, s, data, cfg, logger, step, dev)
        final[a].append(r["finetune_acc"])
        inter[a].append(r["pretrain_acc"])
        per_mod[a].append(r["finetune_acc_per_modality"])
        speed[a].append(r["images_per_second"])
        if a == "learned" and s == 0:
            mask_fig = _mask_figure_data(r["policy"], data, cfg, dev)
    logger.close()
    summary = {
        "data": "PROXY: scikit-learn digits with per-modality transformations (polab.scaled.data.digits_modalities), "
                "standing in for RadImageNet",
        "device": str(dev),
        "seeds": cfg.seeds,
        "final_test_accuracy": {},
        "pretrain_test_accuracy": {},
        "per_modality_final_accuracy": {},
        "paired": {},
        "images_per_second": {a: float(np.mean(v)) for a, v in speed.items()},
    }
    for a in cfg.arms:
        m, h = _mean_ci(final[a])
        summary["final_test_accuracy"][a] = {"mean": m, "ci95_half_width": h, "per_seed": final[a]}
        m, h = _mean_ci(inter[a])
        summary["pretrain_test_accuracy"][a] = {"mean": m, "ci95_half_width": h}
        pm = np.nanmean(np.array(per_mod[a]), 0)
        summary["per_modality_final_accuracy"][a] = {name: float(v) for name, v in zip(cfg.modalities, pm)}
    for x, y in (("learned", "none"), ("learned", "random"), ("random", "none")):
        if x in cfg.arms and y in cfg.arms:
            summary["paired"][f"{x}-{y}"] = _paired(final[x], final[y])
    if mask_fig is not None:
        summary["learned_mask"] = {"mean_of_E[m]_over_test_images": mask_fig["overall_mean"],
                                   "max_between_modality_difference_of_mean_masks": mask_fig["spread"]}
    rows = read_metrics(out / "metrics.csv")
    _figures(out, cfg, final, rows, mask_fig)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_config(NoiseMaskConfig, argv, prog="polab run noise-mask", presets=PRESETS, default_preset="cpu",
                          description=__doc__.split("\n\n")[0])
    out = run(cfg)
    s = json.loads((out / "summary.json").read_text())
    for a, v in s["final_test_accuracy"].items():
        print(f"{a:8s} test accuracy {100 * v['mean']:.2f}% +- {100 * v['ci95_half_width']:.2f} (95% t CI, {cfg.seeds} seeds)")
    for k, v in s["paired"].items():
        print(f"{k:16s} {100 * v['mean_difference']:+.2f} +- {100 * v['ci95_half_width']:.2f} points; paired t p={v['t_test_p']:.3f}, "
              f"Wilcoxon p={v['wilcoxon_p']:.3f}; wins/losses/ties {v['wins']}/{v['losses']}/{v['ties']}")
    print(f"images/s (training): " + ", ".join(f"{a} {v:.0f}" for a, v in s["images_per_second"].items()))
    print(f"run folder: {out}")
    return 0

"""polab's PPO loss, aggregation, KL estimators and rollout IS weights beside verl 0.9.1's own functions.

Optional: verl's package imports ray and omegaconf, so its functions are loaded from an unpacked wheel by
parsing the source files (nothing of verl is stored in polab). Set POLAB_VERL_SOURCE to the folder that holds
``verl/`` (e.g. ``pip download verl==0.9.1 --no-deps`` then unzip the wheel); the test is skipped otherwise.
"""

import ast
import os
import types
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from polab.estimators.policy_loss import AGGREGATIONS, aggregate, kl_penalty, ppo_clip_loss, truncated_is_weights

SRC = os.environ.get("POLAB_VERL_SOURCE")
pytestmark = pytest.mark.skipif(not SRC or not (Path(SRC) / "verl/trainer/ppo/core_algos.py").is_file(),
                                reason="set POLAB_VERL_SOURCE to an unpacked verl 0.9.1 wheel")


def _load(path: Path, names: set, ns: dict) -> dict:
    tree = ast.parse(path.read_text())
    fns = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    for f in fns:
        f.decorator_list = []
    exec(compile(ast.Module(body=fns, type_ignores=[]), str(path), "exec"), ns)
    return ns


@pytest.fixture(scope="module")
def verl():
    root = Path(SRC)
    F = _load(root / "verl/utils/torch_functional.py", {"masked_sum", "masked_mean"}, {"torch": torch})
    verl_F = types.SimpleNamespace(masked_sum=F["masked_sum"], masked_mean=F["masked_mean"])
    ns = {"torch": torch, "verl_F": verl_F, "Optional": Optional, "Any": Any, "ActorConfig": object,
          "AlgoConfig": type("AlgoConfig", (), {}), "SAFETY_BOUND": 20.0}
    _load(root / "verl/trainer/ppo/core_algos.py", {"agg_loss", "kl_penalty", "kl_penalty_forward", "compute_policy_loss_vanilla"}, ns)
    _load(root / "verl/trainer/ppo/rollout_corr_helper.py", {"compute_rollout_correction_weights", "_parse_rollout_is_threshold"}, ns)
    ns["compute_is_metrics"] = lambda **kw: {}
    return ns


class _Cfg(dict):
    def __getattr__(self, k):
        return self[k]

    def get(self, k, d=None):
        return dict.get(self, k, d)


def _batch(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = 6, 9
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    roll = old + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = 0  # an empty row
    mask = (torch.arange(T)[None] < lengths[:, None]).to(torch.float64)
    return logp, old, roll, adv, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mode", AGGREGATIONS)
def test_loss_metrics_and_weights_match_verl(verl, seed, mode):
    logp, old, roll, adv, mask = _batch(seed)
    # seq-mean-token-mean: verl divides each row by (n_b + 1e-8), a relative 1e-8 / n_b difference
    tol = dict(rel=1e-7, abs=1e-9) if mode == "seq-mean-token-mean" else dict(rel=1e-12, abs=1e-14)
    assert aggregate(adv, mask, mode).item() == pytest.approx(verl["agg_loss"](adv, mask, mode).item(), **tol)
    w = truncated_is_weights(old, roll, mask, upper=2.0)
    wv, _ = verl["compute_rollout_correction_weights"](old - roll, mask, "token", 2.0)
    torch.testing.assert_close(w, wv, rtol=1e-12, atol=1e-14)
    cfg = _Cfg(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0, global_batch_info={})
    loss_v, met = verl["compute_policy_loss_vanilla"](old, logp, adv, mask, mode, cfg, rollout_is_weights=wv)
    res = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28, dual_clip=3.0, aggregation=mode, is_weights=w)
    assert res.loss.item() == pytest.approx(loss_v.item(), **tol)
    # verl's masked_mean divides by (count + 1e-8): absolute 1e-8 is the tolerance of the metrics
    assert res.clip_fraction == pytest.approx(met["actor/pg_clipfrac"], abs=1e-8)
    assert res.ppo_kl == pytest.approx(met["actor/ppo_kl"], abs=1e-8)
    assert res.dual_clip_fraction == pytest.approx(met["actor/pg_clipfrac_lower"], abs=1e-8)


@pytest.mark.parametrize("estimator", ["k1", "abs", "k2", "k3", "k1+", "abs+", "k3+"])
def test_kl_estimators_and_their_gradients_match_verl(verl, estimator):
    logp, old, _, _, _ = _batch(11)
    a = logp.clone().requires_grad_(True)
    b = logp.clone().requires_grad_(True)
    ours, theirs = kl_penalty(a, old, estimator), verl["kl_penalty"](b, old, estimator)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-14)

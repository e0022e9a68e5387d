"""polab.scaled.offline.synthetic (policy-guided synthetic windows) and the td3bc-pgd offline method.

Ground truths: hand-enumerated windows; the exact denoiser of a Gaussian, for which the Euler sampler is linear and
its output moments are computed exactly here; the closed-form gradient of the squashed Gaussian policy
log-likelihood; the authors' guidance schedule by hand. Statistical assertions use 4-standard-error margins
(two-sided p ~ 6e-5 per assertion under any seed).
"""

import math
import os

import numpy as np
import pytest
import torch

from polab.scaled.offline import synthetic as S


# -- windows ---------------------------------------------------------------------------------------------------
def _toy_dataset():
    """Episodes of 5 (timeout), 2 (terminal) and 4 (terminal) transitions; 1-D states counting up within an episode."""
    obs, nxt, term, tout = [], [], [], []
    for length, ends_terminal, base in ((5, False, 0.0), (2, True, 100.0), (4, True, 200.0)):
        s = base + np.arange(length + 1, dtype=np.float32)
        obs += list(s[:-1])
        nxt += list(s[1:])
        term += [0.0] * (length - 1) + [1.0 if ends_terminal else 0.0]
        tout += [0.0] * (length - 1) + [0.0 if ends_terminal else 1.0]
    n = len(obs)
    obs, nxt = np.asarray(obs, np.float32)[:, None], np.asarray(nxt, np.float32)[:, None]
    acts = np.linspace(-0.9, 0.9, n, dtype=np.float32)[:, None]
    rews = np.arange(n, dtype=np.float32)
    return obs, acts, rews, nxt, np.asarray(term, np.float32), np.asarray(tout, np.float32)


def test_window_starts_by_hand():
    obs, acts, rews, nxt, term, tout = _toy_dataset()
    # horizon 3, stride 2: episode 0 (rows 0-4): starts 0, 2; episode 1 (rows 5-6) too short; episode 2 (rows 7-10):
    # start 7, plus 8 so that the window ending at the terminal row 10 is present
    assert S.window_starts(obs, nxt, term, tout, horizon=3, stride=2).tolist() == [0, 2, 7, 8]
    assert S.window_starts(obs, nxt, term, tout, horizon=1).tolist() == list(range(11))
    # a break in continuity without any flag also ends an episode
    nxt2 = nxt.copy()
    nxt2[1] += 7
    assert S.window_starts(obs, nxt2, term, tout, horizon=3, stride=1).tolist() == [2, 7, 8]
    with pytest.raises(ValueError, match="horizon"):
        S.window_starts(obs, nxt, term, tout, horizon=0)


def test_windows_round_trip_to_the_dataset_transitions():
    obs, acts, rews, nxt, term, tout = _toy_dataset()
    x, layout = S.build_windows(obs, acts, rews, nxt, term, tout, horizon=2, max_action=2.0)
    assert layout.dim == 2 * (1 + 1 + 2) + 1 and x.shape == (8, layout.dim)
    tr = S.windows_to_transitions(x, layout, max_action=2.0)
    i = S.window_starts(obs, nxt, term, tout, horizon=2)[:, None] + np.arange(2)
    i = i.reshape(-1)
    assert torch.equal(tr["states"][:, 0], torch.as_tensor(obs[i, 0]))
    assert torch.equal(tr["next_states"][:, 0], torch.as_tensor(nxt[i, 0]))
    assert torch.equal(tr["rewards"], torch.as_tensor(rews[i]))
    assert torch.equal(tr["terminals"], torch.as_tensor(term[i]))
    # actions pass through artanh(a / max) and back: float32 round-off only (|a| / max <= 0.45 here)
    assert torch.allclose(tr["actions"][:, 0], torch.as_tensor(acts[i, 0]), atol=1e-5)
    n = S.WindowNormalizer.fit(x, layout)
    assert torch.allclose(n.unnormalize(n.normalize(x)), x, atol=1e-4)
    # transitions after a predicted terminal inside a window are dropped
    y = x.clone()
    states, u, r, d = layout.split(y)
    d[0, 0] = 1.0
    tr2 = S.windows_to_transitions(layout.join(states, u, r, d), layout, max_action=2.0)
    assert len(tr2["actions"]) == len(tr["actions"]) - 1 and tr2["terminals"][0] == 1


# -- the sampler with an exact Gaussian denoiser ------------------------------------------------------------------
class ExactGaussianDenoiser(torch.nn.Module):
    """D(x, sigma) = mu + S (S + sigma^2 I)^-1 (x - mu): the exact denoiser (posterior mean) of N(mu, S)."""

    def __init__(self, mu, cov):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.as_tensor(mu, dtype=torch.float64), requires_grad=False)
        self.cov = torch.as_tensor(cov, dtype=torch.float64)

    def forward(self, x, sigma):
        eye = torch.eye(len(self.mu), dtype=x.dtype)
        M = self.cov @ torch.linalg.inv(self.cov + float(sigma) ** 2 * eye)
        return self.mu + (x - self.mu) @ M.T


def _euler_moments(mu, cov, sigmas):
    """Exact output moments of the Euler ODE x <- x + (s' - s)(x - D(x, s)) / s started at x = sigma_max * eps."""
    mu, cov = np.asarray(mu, float), np.asarray(cov, float)
    d = len(mu)
    T = np.eye(d)
    for s, s2 in zip(sigmas[:-1], sigmas[1:]):
        M = cov @ np.linalg.inv(cov + s ** 2 * np.eye(d))
        T = (np.eye(d) + (s2 - s) / s * (np.eye(d) - M)) @ T
    return mu - T @ mu, sigmas[0] ** 2 * T @ T.T


def test_unguided_sampler_reproduces_the_exact_discretised_gaussian():
    mu = np.array([0.5, -1.0, 0.2, 0.0, 1.0])
    A = np.array([[1.0, 0.3, 0, 0, 0], [0, 0.8, 0.2, 0, 0], [0, 0, 0.6, 0.1, 0], [0, 0, 0, 0.5, 0.0], [0.2, 0, 0, 0, 0.7]])
    cov = A @ A.T
    layout = S.WindowLayout(1, 1, 1)  # dim 5: s, u, r, d, s'
    norm = S.WindowNormalizer(torch.tensor([1.0, 2.0, 0.0, 0.0, 1.0], dtype=torch.float64),
                              torch.tensor([2.0, 1.0, 1.0, 0.5, 2.0], dtype=torch.float64))
    den = ExactGaussianDenoiser(mu, cov)
    n = 20000
    x = S.sample_windows(den, n, layout=layout, normalizer=norm, steps=64, generator=torch.Generator().manual_seed(0))
    m_ex, c_ex = _euler_moments(mu, cov, S.edm_sigma_schedule(64).numpy())
    # the deterministic Euler bias at 64 levels (float64): the mean is within 0.01, the covariance shrinks by up to 8%
    # of its largest entry (EDM's Heun correction, not used by the core, would remove most of that)
    assert np.abs(m_ex - mu).max() < 0.01 and np.abs(c_ex - cov).max() < 0.08 * cov.max()
    st, mn = norm.std.numpy(), norm.mean.numpy()
    m_raw, c_raw = mn + st * m_ex, c_ex * np.outer(st, st)
    xs = x.numpy()
    se_mean = np.sqrt(np.diag(c_raw) / n)
    assert np.all(np.abs(xs.mean(0) - m_raw) < 4 * se_mean)
    emp = np.cov(xs.T)
    se_cov = np.sqrt((np.outer(np.diag(c_raw), np.diag(c_raw)) + c_raw ** 2) / n)  # Gaussian sample covariance SE
    assert np.all(np.abs(emp - c_raw) < 4 * se_cov)


def test_trained_denoiser_reproduces_a_gaussian():
    g = np.random.default_rng(1)
    mu = np.array([0.3, -0.5])
    cov = np.array([[1.0, 0.6], [0.6, 0.8]])
    data = torch.as_tensor(g.multivariate_normal(mu, cov, size=4000), dtype=torch.float32)
    den, losses = S.train_denoiser(data, steps=1500, hidden=64, layers=2, lr=2e-3, ema_decay=0.99, seed=0)
    assert np.mean(losses[-200:]) < np.mean(losses[:50])
    sig = S.edm_sigma_schedule(64, dtype=torch.float32)
    from polab.estimators.diffusion_guidance import policy_guided_sample

    with torch.no_grad():
        x0 = sig[0] * torch.randn((8000, 2), generator=torch.Generator().manual_seed(2))
        xs = policy_guided_sample(lambda x, s: (den(x, s) - x) / s ** 2, lambda x: x * 0, x0, sig, lambda_=0.0).numpy()
    emp_mu, emp_cov = data.numpy().mean(0), np.cov(data.numpy().T)
    # tolerance: 4 Monte Carlo standard errors of the 8000 samples plus a model allowance of 0.1 (mean, in units of
    # the data's std) and 0.15 (covariance entries) -- the allowance is the accuracy required of a 2-layer MLP
    # trained for 1,500 steps, a requirement rather than a derivation
    sd = np.sqrt(np.diag(emp_cov))
    assert np.all(np.abs(xs.mean(0) - emp_mu) < 4 * sd / math.sqrt(8000) + 0.1 * sd)
    se_cov = np.sqrt((np.outer(np.diag(emp_cov), np.diag(emp_cov)) + emp_cov ** 2) / 8000)
    assert np.all(np.abs(np.cov(xs.T) - emp_cov) < 4 * se_cov + 0.15)


# -- guidance --------------------------------------------------------------------------------------------------
def test_guidance_schedule_by_hand():
    w = S.guidance_schedule(5, cosine_coeff=0.3).numpy()  # 4 denoising steps
    want = [1 + 0.3 * math.sin(math.pi / 4), 0.75 + 0.3 * math.sin(math.pi / 2), 0.5 + 0.3 * math.sin(3 * math.pi / 4), 0, 0]
    assert np.allclose(w, want, rtol=1e-12)
    assert S.guidance_schedule(5, delay=2).numpy()[:2].tolist() == [0, 0]


def test_policy_guidance_gradient_closed_form():
    layout = S.WindowLayout(1, 1, 2)  # dim 9
    norm = S.WindowNormalizer(torch.linspace(-0.5, 0.5, 9, dtype=torch.float64), torch.linspace(0.5, 1.5, 9, dtype=torch.float64))
    ma, sig = 2.0, 0.7
    pol = lambda s: 0.3 * s  # noqa: E731
    grad = S.policy_guidance(pol, layout, norm, max_action=ma, policy_sigma=sig)
    z = torch.randn((6, 9), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = grad(z)
    x = norm.unnormalize(z)
    states, u, _, _ = layout.split(x)
    a, mu = ma * torch.tanh(u), 0.3 * states[:, :2]
    du = -(a - mu) / (sig * ma) ** 2 * ma * (1 - torch.tanh(u) ** 2)  # d/du log N(ma tanh u; mu, (sig ma)^2)
    _, gu, gr, gd = layout.split(g)
    _, su, _, _ = layout.split(norm.std[None].expand(6, -1))
    assert torch.allclose(gu, du * su, rtol=1e-10, atol=1e-12)  # chain rule through the normaliser
    mask = layout.action_mask(dtype=torch.float64)
    assert torch.all(g[:, mask == 0] == 0)  # states, rewards, done untouched


def test_guided_sampler_moves_actions_toward_the_policy_and_leaves_independent_states():
    # exact Gaussian behaviour with action independent of the other channels; policy a = 1.0 everywhere
    layout = S.WindowLayout(1, 1, 1)
    norm = S.WindowNormalizer(torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))
    den = ExactGaussianDenoiser(np.zeros(5), np.eye(5) * 0.5)
    target = 1.0
    guide = S.policy_guidance(lambda s: torch.full_like(s, target), layout, norm, max_action=2.0)
    n = 4000
    out = {}
    for c in (0.0, 0.3):
        x = S.sample_windows(den, n, layout=layout, normalizer=norm, guidance=guide, guidance_coeff=c, steps=32,
                             generator=torch.Generator().manual_seed(5))
        tr = S.windows_to_transitions(x, layout, max_action=2.0)
        out[c] = ((tr["actions"][:, 0] - target).abs().numpy(), tr["states"][:, 0].numpy())
    gap0, gap1 = out[0.0][0], out[0.3][0]
    se = math.sqrt(gap0.var() / n + gap1.var() / n)
    assert gap0.mean() - gap1.mean() > 4 * se  # guided actions are closer to the policy's
    s0, s1 = out[0.0][1], out[0.3][1]
    assert abs(s0.mean() - s1.mean()) < 4 * math.sqrt(s0.var() / n + s1.var() / n)  # the independent state is untouched


def test_training_and_sampling_are_deterministic_given_the_seed():
    data = torch.randn((300, 5), generator=torch.Generator().manual_seed(0))
    state = torch.random.get_rng_state()
    a, _ = S.train_denoiser(data, steps=30, hidden=16, seed=3)
    b, _ = S.train_denoiser(data, steps=30, hidden=16, seed=3)
    c, _ = S.train_denoiser(data, steps=30, hidden=16, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))
    layout = S.WindowLayout(1, 1, 1)
    norm = S.WindowNormalizer(torch.zeros(5), torch.ones(5))
    guide = S.policy_guidance(lambda s: 0.5 * s, layout, norm, max_action=1.0)
    draw = lambda seed: S.sample_windows(a, 50, layout=layout, normalizer=norm, guidance=guide, guidance_coeff=0.2,  # noqa: E731
                                         steps=8, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1)) and not torch.equal(draw(1), draw(2))
    # the normalised guidance step makes policy_sigma cancel (gradient ~ 1 / sigma^2, same direction)
    guide2 = S.policy_guidance(lambda s: 0.5 * s, layout, norm, max_action=1.0, policy_sigma=0.3)
    again = S.sample_windows(a, 50, layout=layout, normalizer=norm, guidance=guide2, guidance_coeff=0.2, steps=8,
                             generator=torch.Generator().manual_seed(1))
    assert torch.allclose(again, draw(1), atol=1e-5)  # float32 round-off of the division by the norm
    assert draw(1).shape == (50, 5)


# -- td3bc-pgd in the offline trainer ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    pytest.importorskip("minari")
    pytest.importorskip("mujoco")
    from polab.scaled.offline import datasets as D

    root = tmp_path_factory.mktemp("polab_cache")
    old = {k: os.environ.get(k) for k in ("POLAB_CACHE", "MINARI_DATASETS_PATH")}
    os.environ["POLAB_CACHE"] = str(root)
    os.environ["MINARI_DATASETS_PATH"] = str(root / "minari")
    tiny = D.TaskSpec("InvertedPendulum-v5", td3_steps=300, start_steps=200, snapshot_every=100, hidden=16, transitions=300,
                      eval_episodes=2)
    D.make_dataset("invertedpendulum-medium", spec=tiny, progress=False)
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


PGD = ["--preset", "quick", "--dataset", "invertedpendulum-medium", "--method", "td3bc-pgd", "--grad-steps-per-step", "10",
       "--batch-size", "32", "--no-progress", "--checkpoint-every", "1", "--td3bc-pgd.denoiser-steps", "20",
       "--td3bc-pgd.denoiser-hidden", "16", "--td3bc-pgd.num-windows", "16", "--td3bc-pgd.refresh-every", "20",
       "--td3bc-pgd.sample-steps", "4"]


def test_td3bc_pgd_trains_refreshes_and_resumes_exactly(cache, tmp_path):
    import csv

    from safetensors.torch import load_file

    from polab.scaled.checkpoint import latest_checkpoint
    from polab.scaled.trainers.offline import main

    assert main([*PGD, "--out", str(tmp_path / "full")]) == 0
    with open(tmp_path / "full" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # 4 trainer steps of 10 gradient steps; set-up samples the first set, and it is regenerated before the trainer step
    # that starts at gradient step 20 (the third)
    assert [float(r["synth_refreshes"]) for r in rows] == [1, 1, 2, 2]
    assert all(float(r["synth_transitions"]) <= 16 * 4 for r in rows)
    assert all(np.isfinite(float(r["synth_dynamics_error"])) and float(r["synth_policy_gap"]) >= 0 for r in rows)
    assert main([*PGD, "--out", str(tmp_path / "part"), "--stop-after", "3"]) == 0
    assert main([*PGD, "--out", str(tmp_path / "part"), "--resume"]) == 0
    a = load_file(str(latest_checkpoint(tmp_path / "full") / "policy/model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "part") / "policy/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_td3bc_pgd_batches_mix_synthetic_and_real(cache, tmp_path):
    from polab.scaled.trainers.offline import OfflineConfig, OfflineTrainer

    cfg = OfflineConfig(dataset="invertedpendulum-medium", method="td3bc-pgd", batch_size=32, hidden=16, steps=1,
                        grad_steps_per_step=10, out=str(tmp_path / "mix"), progress=False,
                        methods={"td3bc-pgd": {"denoiser_steps": 5, "denoiser_hidden": 8, "num_windows": 8,
                                               "refresh_every": 10, "sample_steps": 3, "synth_fraction": 0.25}})
    tr = OfflineTrainer(cfg)  # builds the data, the networks and the method (denoiser + first synthetic set)
    batch = tr.method.sample_batch(tr, torch.Generator().manual_seed(0))
    syn, real = tr.method.synth, tr.data
    row = lambda b, i: torch.cat([b["states"][i], b["actions"][i]])  # noqa: E731
    in_set = lambda r, d: bool(((torch.cat([d["states"], d["actions"]], 1) - r).abs().sum(1) == 0).any())  # noqa: E731
    assert all(in_set(row(batch, i), syn) for i in range(8))  # round(0.25 * 32) = 8 synthetic rows first
    assert all(in_set(row(batch, i), real) for i in range(8, 32))
    with pytest.raises(ValueError, match="refresh_every"):
        OfflineConfig(dataset="invertedpendulum-medium", method="td3bc-pgd", grad_steps_per_step=10, out=str(tmp_path / "bad"),
                      methods={"td3bc-pgd": {"refresh_every": 15}}).validate()


def test_simulator_next_states_reproduce_real_transitions(cache):
    from polab.scaled.offline.datasets import load_offline_dataset

    ds = load_offline_dataset("invertedpendulum-medium")
    keep = ds.terminals[:50] == 0
    nxt = S.simulator_next_states(ds.env_id, ds.observations[:50], ds.actions[:50])
    # the data were recorded by the same simulator from the same states: float32 storage round-off only
    assert np.allclose(nxt[keep], ds.next_observations[:50][keep], atol=1e-4)


def test_offline_mujoco_runs_the_pgd_arm_paired_with_td3bc(cache, tmp_path):
    import json

    from polab.scaled.experiments.offline_mujoco import main, run, OfflineMujocoConfig

    with pytest.raises(ValueError, match="pgd-refresh-every"):
        run(OfflineMujocoConfig(algorithms=("td3bc-pgd",), grad_steps_per_step=10, pgd_refresh_every=15, out=str(tmp_path / "bad")))
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "om"
    rc = main(["--quick", "--algorithms", "td3bc", "td3bc-pgd", "--seeds", "1", "--grad-steps", "20", "--grad-steps-per-step", "10",
               "--batch-size", "32", "--pgd-refresh-every", "20", "--pgd-denoiser-steps", "10", "--out", str(out), "--no-progress"])
    assert rc == 0
    d = json.loads((out / "summary.json").read_text())["datasets"]["invertedpendulum-medium"]
    assert d["per_method"]["td3bc-pgd"]["normalized_score"]["n"] == 1 and "td3bc-pgd_minus_td3bc" in d["paired_tests"]
    cfg = json.loads((out / "runs" / "invertedpendulum-medium_td3bc-pgd_s0" / "config.json").read_text())
    assert "td3bc-pgd" in json.dumps(cfg) and '"refresh_every": 20' in json.dumps(cfg)

"""`polab run smoothing-certify` and polab.scaled.control: run folder, budget audit, caching, env fidelity, Atari smoke."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from polab.scaled.cli import main as cli_main
from polab.scaled.logger import read_metrics

gym = pytest.importorskip("gymnasium")

from polab.scaled.control.attack import AdaptiveGradientAttack  # noqa: E402
from polab.scaled.control.envs import ENV_SPECS, MountainCarVectorEnv, _mountaincar_scale, require_ale  # noqa: E402
from polab.scaled.control.policies import MLPActorCritic, SmoothedPolicy  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow  # ~35 s on one core: two quick runs, three attack modes each
def test_quick_run_writes_a_complete_run_folder_and_reuses_the_policy(tmp_path):
    out = tmp_path / "run"
    assert cli_main(["run", "smoothing-certify", "--quick", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quick"] and cfg["envs"] == ["cartpole", "mountaincar"]
    rows = read_metrics(out / "metrics.csv")
    summary = json.loads((out / "summary.json").read_text())
    for env in ("cartpole", "mountaincar"):
        lo, hi = ENV_SPECS[env].reward_range
        for method in ("dkw", "clopper-pearson"):
            cert = [r for r in rows if r["env"] == env and r["kind"] == "certificate" and r["method"] == method]
            assert len(cert) == cfg["num_budgets"]
            vals = np.array([r["value"] for r in cert])
            assert np.all(np.diff(vals) <= 1e-12) and np.all(vals >= lo) and np.all(vals <= hi)
        clean = [r for r in rows if r["env"] == env and r["kind"] == "clean"]
        assert len(clean) == 1 and clean[0]["n"] == cfg["certify_episodes"]
        b0 = [r["value"] for r in rows if r["env"] == env and r["kind"] == "certificate" and r["budget"] == 0.0]
        assert max(b0) <= clean[0]["value"] + 1e-9  # a lower confidence bound on the clean mean
        attacks = [r for r in rows if r["env"] == env and r["kind"] == "attack"]
        assert attacks and all(r["max_spent"] <= r["budget"] * (1 + 1e-9) for r in attacks)  # budget audit
        smoothed = [r for r in attacks if r["sigma"] > 0]
        # one alpha-level certificate: max of DKW and CP each at alpha/2, never above the max of the two at alpha
        assert all(r["certificate_bonferroni"] <= max(r["certificate_dkw"], r["certificate_cp"]) + 1e-12 for r in smoothed)
        assert all(r["value"] >= r["certificate_bonferroni"] - 3 * r["stderr"] for r in smoothed)
        assert {r["attack"] for r in attacks} == {"uniform", "critical", "smoothed-pgd"}
    assert summary["attacked_below_certificate"] == 0
    assert (out / "figures" / "certified_reward.png").stat().st_size > 1000
    latest = (out / "checkpoints" / "latest").read_text()
    from polab.scaled.checkpoint import latest_checkpoint, load_checkpoint

    state = load_checkpoint(latest_checkpoint(out))
    assert set(state["policies"]) == {"cartpole", "mountaincar"}
    # a second run with the same settings loads the cached policies instead of training again
    assert cli_main(["run", "smoothing-certify", "--quick", "--out", str(out)]) == 2  # a non-empty --out needs --resume
    assert cli_main(["run", "smoothing-certify", "--quick", "--out", str(out), "--resume"]) == 0
    assert (out / "checkpoints" / "latest").read_text() == latest
    assert read_metrics(out / "metrics.csv") == rows  # same seed, same policies: identical numbers


def test_mountaincar_vector_env_matches_gymnasium_step_by_step():
    ref = gym.make("MountainCar-v0").unwrapped
    vec = MountainCarVectorEnv(5, seed=0)
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    for i in range(5):
        ref.reset(seed=i)
        vec.state[i] = np.array(ref.state, dtype=np.float64)
    states = [np.array(vec.state[i]) for i in range(5)]
    for _ in range(150):
        acts = rng.integers(3, size=5)
        obs, r, te, tr, _ = vec.step(acts)
        for i in range(5):
            ref.state = states[i].copy()
            o, rr, t, _, _ = ref.step(int(acts[i]))
            states[i] = np.array(ref.state, dtype=np.float64)
            if not (vec.prev_done[i] or te[i]):
                np.testing.assert_allclose(vec.state[i], states[i], rtol=0, atol=1e-12)
                assert rr == r[i] and t == te[i]
        if te.any():
            break
    assert obs.shape == (5, 2) and np.all(np.abs(_mountaincar_scale(vec.state)) <= 1.0 + 1e-6)


def test_attack_respects_the_total_budget_and_follows_the_gradient():
    torch.manual_seed(0)
    net = MLPActorCritic(4, 2)
    pol = SmoothedPolicy(net, sigma=0.2, frame_stack=1, generator=torch.Generator().manual_seed(0))
    frames = torch.randn(64, 4)
    pol.reset(frames)
    for mode in ("uniform", "critical"):
        att = AdaptiveGradientAttack(net, budget=0.7, horizon=10, sigma=0.2, mode=mode)
        att.reset(64)
        alive = torch.ones(64, dtype=torch.bool)
        total = torch.zeros(64, dtype=torch.float64)
        for _ in range(30):
            eps = att.perturb(frames, pol, alive)
            total += eps.double().pow(2).sum(1)
            pol.push(frames + eps)
        assert float(total.max()) <= 0.7**2 * (1 + 1e-6)  # float32 perturbations
        torch.testing.assert_close(total, att.spent, rtol=1e-5, atol=1e-7)
    # the uniform step moves along -grad of the margin, with norm B / sqrt(T)
    att = AdaptiveGradientAttack(net, budget=1.0, horizon=4, sigma=0.2, mode="uniform")
    att.reset(64)
    f = frames.clone().requires_grad_(True)
    lg = net.logits(pol.stack_with(f))
    top = lg.topk(2, dim=-1).values
    (g,) = torch.autograd.grad((top[:, 0] - top[:, 1]).sum(), f)
    eps = att.perturb(frames, pol, torch.ones(64, dtype=torch.bool))
    torch.testing.assert_close(eps, -0.5 * g / g.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        AdaptiveGradientAttack(net, budget=1.0, horizon=4, sigma=0.2, mode="pgd")


def test_smoothing_adds_noise_once_per_frame():
    net = MLPActorCritic(3 * 2, 2)
    pol = SmoothedPolicy(net, sigma=0.5, frame_stack=3, generator=torch.Generator().manual_seed(0))
    pol.reset(torch.zeros(4, 2))
    first = pol.stack.clone()
    pol.push(torch.ones(4, 2))
    torch.testing.assert_close(pol.stack[:, :2], first[:, 1:])  # old frames keep their noise
    assert not torch.allclose(pol.stack[:, 2], torch.ones(4, 2))  # the new frame got fresh noise


def test_missing_ale_py_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)
    with pytest.raises(ImportError, match="pip install ale-py"):
        require_ale()


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["run", "smoothing-certify", "--envs", "bogus", "--out", str(tmp_path)])


@pytest.mark.parametrize("game", ["pong", "freeway"])
def test_atari_smoke_on_a_few_frames(tmp_path, game):
    pytest.importorskip("ale_py")
    out = tmp_path / game
    rc = cli_main(["run", "smoothing-certify", "--envs", game, "--quick", "--train-steps", "32", "--certify-episodes", "4",
                   "--attack-episodes", "2", "--max-steps", "6", "--batch-size", "4", "--attack-modes", "uniform",
                   "--out", str(out)])
    assert rc == 0
    rows = read_metrics(out / "metrics.csv")
    assert any(r["kind"] == "attack" and r["max_spent"] > 0 for r in rows)
    assert (out / "figures" / "certified_reward.png").is_file()


class _LinearNet(torch.nn.Module):
    """logits = [w . x_last, 0]: the averaged logit margin and its distance to the boundary are closed forms."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.as_tensor(w, dtype=torch.float32)

    def logits(self, stack):
        m = stack[:, -1] @ self.w
        return torch.stack([m, torch.zeros_like(m)], dim=1)


def test_smoothed_pgd_attack_flips_exactly_when_the_averaged_boundary_is_within_the_remaining_budget():
    # Reference (derived): with linear logits [w.x, 0] the noise-averaged margin is w.(x + zbar), zbar the mean of
    # the attacker's S noise samples; the CE gradient towards action 1 is along -w, so normalised steps of size eta
    # reach the boundary after ceil(d / eta) steps, d = w.(o + zbar)/|w|, projected onto the ball of radius r.
    # The attack flips iff |d| <= r (the step count 2r/eta suffices) and then spends min(ceil(|d|/eta) eta, r);
    # a state on action 1 (d < 0) is pushed the other way, to action 0.
    from polab.scaled.control.attack import SmoothedPGDAttack

    w = torch.tensor([3.0, -4.0])  # |w| = 5
    net = _LinearNet(w)
    sigma, S, eta, B = 0.3, 16, 0.01, 0.5
    seed = 123
    att = SmoothedPGDAttack(net, budget=B, sigma=sigma, generator=torch.Generator().manual_seed(seed),
                            noise_samples=S, step_size=eta)
    att.reset(4)
    ref_gen = torch.Generator().manual_seed(seed)
    pol = SmoothedPolicy(net, sigma=sigma, frame_stack=1, generator=torch.Generator().manual_seed(0))
    # distances along w/|w| of 0.123, 0.41, 0.9 (out of reach), and -0.2: a state on action 1
    base = torch.tensor([0.123, 0.41, 0.9, -0.2])
    zbar = (sigma * torch.randn((S, 2), generator=ref_gen)).mean(0)
    frames = (base[:, None] * w / 5 - zbar).float()
    pol.reset(frames)
    eps = att.perturb(frames, pol, torch.ones(4, dtype=torch.bool))
    norms = eps.double().norm(dim=1)
    d = ((frames.double() + zbar.double()) @ w.double()) / 5
    for i in range(4):
        if abs(d[i]) <= B:
            want = min(math.ceil(abs(float(d[i])) / eta - 1e-6) * eta, B)
            assert float(norms[i]) == pytest.approx(want, rel=1e-5)  # float32 frames
            torch.testing.assert_close(eps[i] / norms[i].float(), -torch.sign(d[i]).float() * w / 5, rtol=1e-4, atol=1e-5)
        else:
            assert float(norms[i]) == 0.0  # no flip: nothing spent
    rem = att.remaining.clone()
    torch.testing.assert_close(rem**2 + att.spent, torch.full((4,), B**2, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert float(rem[2]) == B  # the whole budget carried forward
    # next step: row 2 reaches a state at distance 0.305 and is flipped with the carried-forward budget (31 steps)
    zbar2 = (sigma * torch.randn((S, 2), generator=ref_gen)).mean(0)
    frames2 = (torch.full((4,), 0.305)[:, None] * w / 5 - zbar2).float()
    eps2 = att.perturb(frames2, pol, torch.tensor([False, False, True, False]))
    assert float(eps2[2].double().norm()) == pytest.approx(0.31, rel=1e-5)
    assert float(eps2[[0, 1, 3]].abs().max()) == 0.0  # finished episodes are not attacked
    assert att.flips.tolist() == [1, 1, 1, 1]


def test_smoothed_pgd_attack_respects_the_total_budget_on_a_random_network():
    from polab.scaled.control.attack import SmoothedPGDAttack, make_attack

    torch.manual_seed(0)
    net = MLPActorCritic(3 * 4, 3)
    pol = SmoothedPolicy(net, sigma=0.2, frame_stack=3, generator=torch.Generator().manual_seed(0))
    frames = torch.randn(32, 4)
    pol.reset(frames)
    att = make_attack(net, mode="smoothed-pgd", budget=0.4, horizon=20, sigma=0.2, generator=torch.Generator().manual_seed(1),
                      noise_samples=8, step_size=0.02)
    assert isinstance(att, SmoothedPGDAttack)
    att.reset(32)
    total = torch.zeros(32, dtype=torch.float64)
    for _ in range(20):
        eps = att.perturb(frames, pol, torch.ones(32, dtype=torch.bool))
        total += eps.double().pow(2).sum(1)
        pol.push(frames + eps)
        frames = frames + 0.1 * torch.randn(32, 4)
    assert float(total.max()) <= 0.4**2  # exact: the applied float32 perturbation is audited in float64
    torch.testing.assert_close(total, att.spent, rtol=1e-12, atol=1e-12)
    assert int(att.flips.sum()) > 0  # it did attack
    with pytest.raises(ValueError, match="generator"):
        make_attack(net, mode="smoothed-pgd", budget=0.4, horizon=20, sigma=0.2)
    with pytest.raises(ValueError, match="attack mode"):
        make_attack(net, mode="pgd", budget=0.4, horizon=20, sigma=0.2)

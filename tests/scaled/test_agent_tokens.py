"""POAD/BAD on multi-token actions: the token policy, the ``bad`` token path and ``ppo-action``, hand-derived values.

Tolerances: float64 arithmetic of the credit methods, 1e-12 absolute (values of order 1); the
policy's float32 log-probabilities, 1e-5.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from polab.scaled.agents.policies import ChoiceCritic, ChoicePolicy
from polab.scaled.agents.rollout import ActionSample, AgentBatch, Episode, StepRecord, TurnContext, collect_episodes
from polab.scaled.agents.token_policy import ActionWords, TokenActionPolicy
from polab.scaled.methods.agent_credit import AGENT_CREDIT, from_token_layout, token_layout

from .agent_fixtures import LineWorld


# -- hand-built batches -------------------------------------------------------------------------------


def _step(ep: int, t: int, n_tokens: int, reward: float, last: bool) -> StepRecord:
    ctx = TurnContext(observation=f"o{ep}.{t}", admissible=("a",), turn=t)
    smp = ActionSample(action="a", choice=0, logp=0.0, extra={"action_ids": torch.arange(2, 2 + n_tokens)})
    return StepRecord(group=0, trajectory=ep, t=t, context=ctx, anchor=f"{ep}.{t}", sample=smp, reward=reward, terminated=last,
                      truncated=False, valid=True, won=False)


def _batch(spec) -> AgentBatch:
    """``spec``: per episode a list of (tokens, reward) per action."""
    eps = []
    for i, acts in enumerate(spec):
        steps = [_step(i, t, n, r, t == len(acts) - 1) for t, (n, r) in enumerate(acts)]
        eps.append(Episode(group=0, trajectory=i, task_seed=i, task_id=i, steps=steps))
    return AgentBatch(episodes=eps, group_size=len(eps))


class _FixedCritic(torch.nn.Module):
    """Returns preset token values ``[steps, T]`` (the method's critic replaced by known numbers)."""

    def __init__(self, values: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.values, self.mask = values, mask
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, steps):
        return self.values + 0.0 * self.w, self.mask


def _method(name: str, critic, **opts):
    cls = AGENT_CREDIT.get(name)
    m = cls(cls.Options(**{"whiten": "none", **opts}))
    m.token_level, m.critic = True, critic
    m.optimizer = torch.optim.SGD(critic.parameters(), lr=0.0)
    return m


# one episode, two actions of three tokens each; reward 0 after the first action, 1 after the second (terminal)
V2x3 = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)
M2x3 = torch.ones(2, 3, dtype=torch.float64)


def test_bad_hand_example_two_actions_three_tokens():
    # gamma 0.9, lambda 0.5 (inside actions too, as ADRL's POAD recursion: gae = delta + lambda * gae between tokens).
    # deltas: intra V(j+1) - V(j) = 0.1 each; action ends: 0 + 0.9 * 0.4 - 0.3 = 0.06 and 1 - 0.6 = 0.4.
    # backwards: 0.4; 0.1 + 0.5 * 0.4 = 0.3; 0.1 + 0.5 * 0.3 = 0.25; 0.06 + 0.45 * 0.25 = 0.1725; 0.1 + 0.5 * 0.1725 = 0.18625;
    # 0.1 + 0.5 * 0.18625 = 0.193125
    b = _batch([[(3, 0.0), (3, 1.0)]])
    res = _method("bad", _FixedCritic(V2x3, M2x3), gamma=0.9, lambda_=0.5).compute(None, b)
    want = torch.tensor([[0.193125, 0.18625, 0.1725], [0.25, 0.3, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(res.token, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.advantages, want[:, 0], rtol=0, atol=1e-12)


def test_ppo_action_hand_example_one_value_per_action():
    # V(o1) = 0.1, V(o2) = 0.4 (the critic's first positions): deltas 0 + 0.9 * 0.4 - 0.1 = 0.26 and 1 - 0.4 = 0.6;
    # A2 = 0.6, A1 = 0.26 + 0.9 * 0.5 * 0.6 = 0.53; no token-level advantages (the trainer gives A to every token)
    b = _batch([[(3, 0.0), (3, 1.0)]])
    res = _method("ppo-action", _FixedCritic(V2x3, M2x3), gamma=0.9, lambda_=0.5).compute(None, b)
    torch.testing.assert_close(res.advantages, torch.tensor([0.53, 0.6], dtype=torch.float64), rtol=0, atol=1e-12)
    assert res.token is None


def test_lambda_one_first_token_is_the_action_advantage_and_last_token_when_values_are_flat():
    b = _batch([[(3, 0.0), (3, 1.0)]])
    bad = _method("bad", _FixedCritic(V2x3, M2x3), gamma=0.9, lambda_=1.0).compute(None, b)
    act = _method("ppo-action", _FixedCritic(V2x3, M2x3), gamma=0.9, lambda_=1.0).compute(None, b)
    # hand: action level A2 = 1 - 0.4 = 0.6, A1 = 0.9 * 0.4 - 0.1 + 0.9 * 0.6 = 0.8; BAD's first tokens carry them
    torch.testing.assert_close(act.advantages, torch.tensor([0.8, 0.6], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(bad.token[:, 0], act.advantages, rtol=0, atol=1e-12)
    # the last token's advantage is the return minus V(o, w^{<last}): equal to the action's only when the critic is flat inside it
    assert abs(float(bad.token[0, 2] - act.advantages[0])) == pytest.approx(0.2, abs=1e-12)
    flat = torch.tensor([[0.1, 0.1, 0.1], [0.4, 0.4, 0.4]], dtype=torch.float64)
    bad_f = _method("bad", _FixedCritic(flat, M2x3), gamma=0.9, lambda_=1.0).compute(None, b)
    torch.testing.assert_close(bad_f.token, act.advantages[:, None].expand(2, 3), rtol=0, atol=1e-12)


def _adrl_poad_reference(spec, values, gamma, lam):
    """Token GAE written as ADRL's ``batch_process_tppo`` loop (POAD branch), per episode, terminal at its end.

    ADRL ``mappo/utils/language_buffer.py`` (morning9393/ADRL@1a56809cdf861b1cac761554f370d9941b818c42): inside an action
    ``delta = V(j+1) - V(j)``, ``gae = delta + lambda * gae`` (discount 1, the same lambda); on its last token
    ``delta = r + gamma * V(next action's first token) * mask - V``, ``gae = delta + gamma * lambda * mask * gae``.
    Our own loop following that recursion (not their code).
    """
    out, k = [], 0
    rows = []
    for acts in spec:
        idx = list(range(k, k + len(acts)))
        k += len(acts)
        adv = {}
        gae = 0.0
        for t in reversed(range(len(acts))):
            n, r = acts[t]
            for j in reversed(range(n)):
                v = float(values[idx[t], j])
                if j == n - 1:
                    nxt = float(values[idx[t + 1], 0]) if t + 1 < len(acts) else 0.0
                    cont = 1.0 if t + 1 < len(acts) else 0.0
                    delta = r + gamma * nxt * cont - v
                    gae = delta + gamma * lam * cont * gae
                else:
                    delta = float(values[idx[t], j + 1]) - v
                    gae = delta + lam * gae
                adv[(t, j)] = gae
        rows.append(adv)
    for acts, adv in zip(spec, rows):
        for t, (n, _) in enumerate(acts):
            out.append([adv[(t, j)] for j in range(n)])
    return out


def test_bad_matches_the_adrl_loop_on_ragged_actions():
    gen = torch.Generator().manual_seed(0)
    spec = [[(2, 0.0), (5, 0.3), (1, 1.0)], [(4, -0.2)], [(3, 0.0), (3, 0.5)]]
    steps = sum(len(a) for a in spec)
    T = 5
    mask = torch.zeros(steps, T, dtype=torch.float64)
    for k, (n, _) in enumerate(x for a in spec for x in a):
        mask[k, :n] = 1
    values = torch.rand(steps, T, generator=gen, dtype=torch.float64) * mask
    b = _batch(spec)
    res = _method("bad", _FixedCritic(values, mask), gamma=0.95, lambda_=0.8).compute(None, b)
    ref = _adrl_poad_reference(spec, values, 0.95, 0.8)
    for k, row in enumerate(ref):
        torch.testing.assert_close(res.token[k, :len(row)], torch.tensor(row, dtype=torch.float64), rtol=0, atol=1e-12)
        assert bool((res.token[k, len(row):] == 0).all())
    # the layout round-trips and puts each reward on its action's last token
    rew, val, end, m, where = token_layout(b, values, mask)
    torch.testing.assert_close(from_token_layout(val, where, mask), values, rtol=0, atol=0)
    assert float(end.sum()) == steps and float(rew.sum()) == pytest.approx(0.3 + 1.0 - 0.2 + 0.5, abs=1e-12)


def test_bad_and_ppo_action_agree_on_the_one_token_choice_policy():
    pol = ChoicePolicy(d_model=16, layers=1, heads=2, max_len=32, seed=0)
    envs = [LineWorld(length=5, limit=6) for _ in range(6)]
    b = collect_episodes(envs, pol, [0, 1, 2], group_size=2, max_turns=6, generator=torch.Generator().manual_seed(1))
    critic = ChoiceCritic(pol, seed=5)
    out = []
    for name in ("bad", "ppo-action"):
        cls = AGENT_CREDIT.get(name)
        m = cls(cls.Options(gamma=0.9, lambda_=0.7))
        m.token_level, m.critic = False, critic
        out.append(m.compute(None, b).advantages)
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=1e-12)


# -- the token policy -----------------------------------------------------------------------------------


def _negotiation_contexts():
    from polab.scaled.envs.text_protocol import make_text_env

    env = make_text_env("negotiation:max_count=2")
    obs, info = env.reset(seed=3)
    ctx0 = TurnContext(observation=obs, admissible=tuple(info["admissible_actions"]), anchor=info["anchor"])
    # reject-and-counter so that 'accept' becomes admissible
    obs, r, term, trunc, info = env.step("propose books=%d hats=%d balls=%d" % env.counts)
    ctx1 = TurnContext(observation=obs, admissible=tuple(info["admissible_actions"]), anchor=info["anchor"], turn=1)
    return ctx0, ctx1


def test_token_policy_is_a_distribution_over_the_admissible_actions():
    pol = TokenActionPolicy(tokenizer="word", d_model=16, layers=1, heads=2, max_len=64, seed=0)
    for ctx in _negotiation_contexts():
        pol.act([ctx], generator=torch.Generator().manual_seed(0))  # grows the action vocabulary
        steps = []
        for a in ctx.admissible:
            ids = torch.tensor(pol.words.encode(a) + [ActionWords.EOS])
            steps.append(StepRecord(group=0, trajectory=0, t=0, context=ctx, anchor="", sample=ActionSample(a, 0, 0.0, {"action_ids": ids}),
                                    reward=0.0, terminated=False, truncated=False, valid=True, won=False))
        lp, mask, ent = pol.log_probs(steps)
        # exact enumeration: the constrained decoder puts all its mass on the admissible actions
        assert float(torch.logsumexp(lp.detach().sum(1).double(), 0).exp()) == pytest.approx(1.0, abs=1e-5)
        # 'propose' + three numbers + <eos>; 'accept' + <eos>
        assert [int(x) for x in mask.sum(1)] == [2 if a == "accept" else 5 for a in ctx.admissible]
        assert bool((ent >= 0).all())


def test_token_policy_samples_admissible_actions_and_recomputes_their_logp():
    from polab.scaled.envs.text_protocol import make_text_env

    pol = TokenActionPolicy(tokenizer="word", d_model=16, layers=1, heads=2, max_len=64, seed=1)
    envs = [make_text_env("negotiation:max_count=2") for _ in range(6)]
    b = collect_episodes(envs, pol, [0, 1, 2], group_size=2, max_turns=4, generator=torch.Generator().manual_seed(2))
    assert all(s.valid and s.sample.choice >= 0 for s in b.steps)
    proposals = [s for s in b.steps if s.sample.action.startswith("propose")]
    assert proposals and all(len(s.sample.extra["action_ids"]) == 5 for s in proposals)  # 4 words + <eos>
    lp, mask, _ = pol.log_probs(b.steps)
    torch.testing.assert_close(lp.sum(1), torch.tensor([s.sample.logp for s in b.steps], dtype=lp.dtype), rtol=0, atol=1e-5)
    crit_v, crit_m = pol.make_token_critic(seed=3)(b.steps)
    assert crit_v.shape == lp.shape and bool((crit_m == mask).all())


def test_unconstrained_token_policy_sends_invalid_replies_through_the_protocol():
    from polab.scaled.envs.text_protocol import make_text_env

    pol = TokenActionPolicy(tokenizer="word", d_model=16, layers=1, heads=2, max_len=64, seed=0, constraint="none", max_action_tokens=3)
    envs = [make_text_env("negotiation:max_count=2,max_steps=3") for _ in range(4)]
    b = collect_episodes(envs, pol, [0, 1], group_size=2, max_turns=3, generator=torch.Generator().manual_seed(0))
    inval = [s for s in b.steps if not s.valid]
    # 3 tokens at most cannot spell a 4-word proposal, so every step not 'accept' is invalid: a no-op with reward 0 (the default penalty)
    assert inval and all(s.sample.choice == -1 and s.reward == 0.0 for s in inval)
    assert all(s.valid == (s.sample.action == "accept") for s in b.steps)
    lp, mask, _ = pol.log_probs(b.steps)  # invalid replies are still training samples
    assert bool((mask.sum(1) >= 1).all())
    torch.testing.assert_close(lp.sum(1), torch.tensor([s.sample.logp for s in b.steps], dtype=lp.dtype), rtol=0, atol=1e-5)


def test_agent_trainer_gives_bad_token_advantages_to_the_loss(tmp_path):
    from polab.scaled.trainers.agent import AgentConfig, AgentTrainer

    cfg = AgentConfig(env="negotiation:max_count=2,max_steps=3", policy="tokens", method="bad", tokenizer="word", view="anchor",
                      tasks_per_step=2, group_size=2, max_turns=3, steps=1, eval_every=0, eval_episodes=2, d_model=16, layers=1, heads=2,
                      max_len=64, checkpoint_every=1, tensorboard=False, progress=False, out=str(tmp_path / "r"), seed=0)
    tr = AgentTrainer(cfg)
    try:
        res = tr.train_step()
        li = res.loss_inputs
        tok = li["credit"].token.to(li["advantages"].dtype)
        torch.testing.assert_close(li["advantages"], tok[:, :li["advantages"].shape[1]] * li["mask"], rtol=0, atol=0)
        # tokens of one action get different advantages (the point of BAD); ppo-action would give them one value
        per_row = [li["advantages"][i][li["mask"][i] > 0] for i in range(li["mask"].shape[0])]
        assert any(float(r.max() - r.min()) > 0 for r in per_row if r.numel() > 1)
        assert "explained_variance" in res.metrics
    finally:
        tr.close()


def test_token_policy_options_are_validated():
    from polab.scaled.trainers.agent import AgentConfig

    errs = AgentConfig(policy="tokens", action_tokens=1, action_constraint="maybe").check()
    assert any("action_tokens" in e for e in errs) and any("action_constraint" in e for e in errs)
    bad = AGENT_CREDIT.get("bad")
    assert bad.validate(bad.Options(), AgentConfig(policy="llm")) and not bad.validate(bad.Options(), AgentConfig(policy="tokens"))
    with pytest.raises(ValueError, match="constraint"):
        TokenActionPolicy(constraint="maybe")


@pytest.mark.slow
def test_agent_tokens_quick_run_and_bad_options(tmp_path):
    import json

    from polab.scaled.cli import main as polab_main
    from polab.scaled.experiments.agent_tokens import main

    out = tmp_path / "at"
    assert main(["--quick", "--env", "negotiation:max_count=2,max_steps=3", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["summary"]) == {"bad", "ppo-action"} and len(s["summary"]["bad"]["eval_success_final"]["per_seed"]) == 2
    assert "bad - ppo-action" in s["tests"] and (out / "figures" / "agent_tokens.png").is_file()
    assert polab_main(["run", "agent-tokens", "--methods", "bad", "gigpo", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("n", [1, 2])
def test_action_words_round_trip(n):
    w = ActionWords(16)
    acts = [" ".join(p) for p in itertools.product(["propose", "go"], ["a=1", "b=2"])][: 2 * n]
    for a in acts:
        w.add(a)
    for a in acts:
        assert w.decode(w.encode(a)) == a
    assert w.encode("unknown word") is None

"""SmolLM2 smoke tests of every agent method that runs with ``--policy llm`` (issue 15: "on SmolLM2 each method runs a smoke
test in CI").

One SmolLM2-135M-Instruct load is shared by the module (``smollm2`` fixture; every trainer gets the same model object, its
weights reset to the loaded ones before each test), and each test runs ONE training step of ``polab train agent`` with
``--policy llm`` on 2 environments x 2 turns (one task, ``group_size=2``, ``max_new_tokens=6``):

- credit assignment ``grpo``, ``rloo``, ``gigpo`` (Sokoban);
- the sample filter ``arpo`` (Sokoban; a second step, so that ARPO's replay can occur: see its test);
- the reward shapers ``epo-process`` (negotiation) and ``debate`` (evidence proxy), with ``grpo`` credit.

Each test checks what could break on a real language model: replies parsed with the environment's ``parse_action``
(an unparsable reply is an invalid action sent as the raw text, ``choice = -1``, ``valid = False``, counted in
``invalid_action_rate``); the PPO loss finite; the advantages ``[step rows, reply tokens]`` equal to the method's per-row
advantage on every reply token (the method's closed form or its core function recomputed from the batch); the method's
own metrics present and in range.

Not run with the LLM policy, by design:

- ``bad`` (POAD) and ``ppo-action`` need a token-level critic, which exists for the small policies only; with
  ``--policy llm`` they are refused with a clear ``ValueError`` (tested below, no model load);
- PoAct is a policy of its own (``--policy poact``: a mode head over the small choice policy,
  :mod:`polab.scaled.agents.poact`), not a method that can wrap a language model; its tests use the small policy
  (``tests/scaled/test_poact.py`` and the agent trainer tests).

Runtime: see the ``slow`` marks (measured on 2 CPU cores).
"""

from __future__ import annotations

import math

import pytest
import torch

from polab.estimators.gigpo import anchor_groups, gigpo_advantages
from polab.scaled.envs.text_protocol import make_text_env, parse_action
from polab.scaled.trainers.agent import AgentConfig, AgentTrainer

SOKOBAN = "sokoban:size=5,boxes=1"


@pytest.fixture(scope="module")
def smollm2():
    """SmolLM2 loaded once, with a copy of its weights to restore before each test."""
    from polab.scaled.models import EMBEDDED_MODEL, load_model

    loaded = load_model(EMBEDDED_MODEL)
    initial = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return loaded, initial


@pytest.fixture
def make_trainer(smollm2, tmp_path, monkeypatch):
    """``make_trainer(**config) -> AgentTrainer`` on the shared SmolLM2 (load_model patched to hand it out)."""
    import polab.scaled.models as models

    loaded, initial = smollm2
    loaded.model.load_state_dict(initial)
    loads = []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: (loads.append(name), loaded)[1])
    made = []

    def make(**kw):
        base = dict(env=SOKOBAN, policy="llm", model="smollm2-135m-instruct", tasks_per_step=1, group_size=2, max_turns=2,
                    steps=100, eval_every=0, eval_episodes=2, lr=1e-6, max_new_tokens=6, history_turns=1, tensorboard=False,
                    progress=False, checkpoint_every=100, seed=0, out=str(tmp_path / f"run{len(made)}"))
        base.update(kw)
        cfg = AgentConfig(**base)
        cfg.validate()
        tr = AgentTrainer(cfg)
        made.append(tr)
        assert loads == ["smollm2-135m-instruct"] * len(made) and tr.policy is loaded.model
        return tr

    yield make
    for tr in made:
        tr.close()


def _check_step(res, *, compare_behaviour=True):
    """Checks shared by every method; returns (batch, per-row advantages)."""
    li = res.loss_inputs
    b, credit = li["batch"], li["credit"]
    assert len(b.episodes) == 2 and all(1 <= e.length <= 2 for e in b.episodes)
    invalid = 0
    for s in b.steps:
        parsed = parse_action(s.sample.extra["reply"], s.context.admissible)
        # invalid-action handling: an unparsable reply is sent as the raw reply, choice -1, valid False (never a crash)
        assert s.sample.action == (parsed if parsed is not None else s.sample.extra["reply"])
        assert s.valid == (parsed is not None)
        assert s.sample.choice == (s.context.admissible.index(parsed) if parsed is not None else -1)
        invalid += parsed is None
    mask, logp, adv = li["mask"], li["logp"], li["advantages"]
    n = len(b.steps)
    assert logp.shape == mask.shape == adv.shape and adv.shape[0] == n
    assert int(mask.sum()) == sum(len(s.sample.extra["reply_ids"]) for s in b.steps)
    assert credit.advantages.shape == (n,) and torch.isfinite(credit.advantages).all()
    # every reply token of a row carries the row's advantage; padding carries 0
    torch.testing.assert_close(adv, credit.advantages.to(adv.dtype)[:, None] * mask, rtol=0, atol=0)
    if compare_behaviour:  # old log-probabilities recomputed by the update = the rollout's (same weights; float32 sums)
        torch.testing.assert_close((logp * mask).sum(1).double(), torch.tensor([s.sample.logp for s in b.steps], dtype=torch.float64),
                                   rtol=1e-4, atol=1e-3)
    m = res.metrics
    for k in ("loss", "policy_loss", "grad_norm", "advantage_abs"):
        assert math.isfinite(m[k]), k
    assert 0.0 <= m["clip_fraction"] <= 1.0 and 0.0 <= m["invalid_action_rate"] <= 1.0
    if compare_behaviour:  # the batch is the rollout: the logged rate is the rows' invalid fraction
        assert m["invalid_action_rate"] == pytest.approx(invalid / n)
    return b, credit.advantages.double()


@pytest.mark.llm
@pytest.mark.slow  # each SmolLM2 step ~5-10 s of CPU; the module's load ~5 s (module docstring)
def test_grpo_step_smollm2(make_trainer):
    res = make_trainer(method="grpo").train_step()
    b, a = _check_step(res)
    R = b.trajectory_returns()
    # G = 2, verl convention: A_i = (R_i - mean) / (unbiased std + 1e-6) = sign(R_1 - R_2) / sqrt(2) per trajectory (0 if tied);
    # the 1e-6 epsilon changes this by < 1e-6 / std, negligible at atol 1e-4 unless |R_1 - R_2| < 1e-2
    d = float(R[0] - R[1])
    expected = torch.tensor([1.0, -1.0], dtype=torch.float64) * (math.copysign(1 / math.sqrt(2), d) if abs(d) > 1e-2 else 0.0)
    if abs(d) > 1e-2 or d == 0:
        torch.testing.assert_close(a, expected[b.row_episode()], rtol=0, atol=1e-4)
    assert res.metrics["zero_variance_groups"] == float(d == 0)


@pytest.mark.llm
@pytest.mark.slow
def test_rloo_step_smollm2(make_trainer):
    res = make_trainer(method="rloo").train_step()
    b, a = _check_step(res)
    R = b.trajectory_returns()
    # G = 2: A_1 = R_1 - R_2, A_2 = R_2 - R_1 (leave-one-out baseline = the other return)
    torch.testing.assert_close(a, torch.stack([R[0] - R[1], R[1] - R[0]])[b.row_episode()], rtol=0, atol=1e-6)
    assert res.metrics["zero_variance_groups"] == float(R[0] == R[1])


@pytest.mark.llm
@pytest.mark.slow
def test_gigpo_step_smollm2(make_trainer):
    res = make_trainer(method="gigpo").train_step()
    b, a = _check_step(res)
    credit = res.loss_inputs["credit"]
    sg = credit.loss_inputs["step_group_ids"]
    anchors = [str(x) for x in b.anchors()]
    # one task group: rows share a step group iff their anchor states are identical (both episodes start in the same state)
    for i in range(len(anchors)):
        for j in range(len(anchors)):
            assert (sg[i] == sg[j]) == (anchors[i] == anchors[j])
    first = [k for k, s in enumerate(b.steps) if s.t == 0]
    assert len(first) == 2 and sg[first[0]] == sg[first[1]]
    torch.testing.assert_close(sg, anchor_groups(b.anchors(), b.episode_group_ids()))
    ref = gigpo_advantages(b.step_rewards(), b.episode_group_ids(), b.trajectory_ids(), sg, gamma=0.95, omega=1.0, convention="paper")
    torch.testing.assert_close(a, ref.advantages.double(), rtol=1e-6, atol=1e-6)
    m = res.metrics
    assert m["step_groups"] == len(set(anchors))
    assert 0.0 <= m["singleton_step_group_fraction"] <= 1.0
    assert m["mean_step_group_size"] == pytest.approx(len(anchors) / len(set(anchors)))
    assert math.isfinite(m["step_advantage_abs"]) and math.isfinite(m["episode_advantage_abs"])


@pytest.mark.llm
@pytest.mark.slow
def test_arpo_filter_and_replay_smollm2(make_trainer):
    """ARPO's filter on SmolLM2 trajectories. Step 1 runs the filter as in training (SmolLM2 almost never wins a Sokoban level
    in 2 turns, so nothing is buffered); then step 1's two real SmolLM2 trajectories are put in the buffer as if they had
    succeeded (a test-only label: the replay path is what is tested), and step 2 (same single task) must replace one
    trajectory of its group by a buffered one exactly when the group is all-failed."""
    tr = make_trainer(method="grpo", sample_filter="arpo", train_tasks=1)
    res1 = tr.train_step()
    b1, _ = _check_step(res1)
    m1 = res1.metrics
    for k in ("replaced_trajectories", "buffer_size", "all_failed_groups"):
        assert k in m1 and math.isfinite(m1[k])
    won1 = [e.won for e in b1.episodes]
    assert m1["all_failed_groups"] == float(not any(won1))
    assert m1["replaced_trajectories"] == 0.0  # the buffer was empty
    assert m1["buffer_size"] == float(sum(won1))
    buf = tr.sample_filter.buffer
    buf.update([e.task_seed for e in b1.episodes], torch.ones(2, dtype=torch.float64), list(b1.episodes))
    buffered = {tuple(s.sample.action for s in e.steps) + (tuple(s.sample.extra["reply"] for s in e.steps),) for e in b1.episodes}
    res2 = tr.train_step()
    b2, _ = _check_step(res2, compare_behaviour=False)  # a replayed trajectory's log-probabilities are step 1's policy's
    m2 = res2.metrics
    all_failed = m2["success_rate"] == 0.0  # the fresh rollout of step 2 (one group)
    assert m2["all_failed_groups"] == float(all_failed)
    assert m2["replaced_trajectories"] == float(all_failed)
    assert m2["buffer_size"] >= 2.0
    keys = [tuple(s.sample.action for s in e.steps) + (tuple(s.sample.extra["reply"] for s in e.steps),) for e in b2.episodes]
    assert sum(k in buffered for k in keys) >= int(all_failed)
    # the injected trajectory keeps its slot's group and trajectory ids
    assert [e.group for e in b2.episodes] == [0, 0] and sorted(e.trajectory for e in b2.episodes) == [0, 1]


def _step_seeing_rollout(tr):
    """One training step; returns (step result, the rollout batch as the reward shaper received it, before shaping)."""
    seen = []
    apply = tr.reward_shaper.apply
    tr.reward_shaper.apply = lambda trainer, batch: (seen.append(batch), apply(trainer, batch))[1]
    res = tr.train_step()
    (rollout,) = seen
    return res, rollout


@pytest.mark.llm
@pytest.mark.slow
def test_epo_process_step_smollm2(make_trainer):
    from polab.scaled.methods.agent_rewards import negotiation_process_rewards

    spec = "negotiation:max_count=2"
    tr = make_trainer(env=spec, method="grpo", reward_shaper="epo-process")
    res, rollout = _step_seeing_rollout(tr)
    b, _ = _check_step(res)
    env = make_text_env(spec)
    procs = []
    for e, shaped in zip(rollout.episodes, b.episodes):
        p = negotiation_process_rewards(env, e)
        procs += p
        assert all(-1.0 - 1e-12 <= x <= 1e-12 for x in p)  # ask-distance scores are <= 0, an invalid turn -1
        for s, x in zip(e.steps, p):
            if not s.valid:
                assert x == -1.0
        # gamma = 1, c_p = c_o = 1: the shaped rewards of an episode add up to G_0 = sum of process rewards + task return
        assert sum(s.reward for s in shaped.steps) == pytest.approx(sum(p) + e.total_reward, abs=1e-9)
    m = res.metrics
    assert m["process_reward_mean"] == pytest.approx(sum(procs) / len(procs), abs=1e-9)
    assert m["outcome_mean"] == pytest.approx(float(rollout.trajectory_returns().mean()), abs=1e-9)
    assert m["return_mean"] == pytest.approx(float(rollout.trajectory_returns().mean()), abs=1e-9)  # logged: the task's return


@pytest.mark.llm
@pytest.mark.slow
def test_debate_step_smollm2(make_trainer):
    tr = make_trainer(env="evidence:n_evidence=3", method="grpo", reward_shaper="debate")
    res, rollout = _step_seeing_rollout(tr)
    b, _ = _check_step(res)
    lam = tr.reward_shaper.options.weight
    decided = 0
    for e, shaped in zip(rollout.episodes, b.episodes):
        dec = [k for k, s in enumerate(e.steps) if s.valid and s.sample.action in ("decide present", "decide absent")]
        decided += bool(dec)
        for k, (s, t) in enumerate(zip(e.steps, shaped.steps)):
            if not dec or k != dec[0]:  # no debate term off the decision turn: (1 - lambda) r_env
                assert t.reward == pytest.approx((1 - lam) * s.reward, abs=1e-12)
            else:  # decision turn: (1 - lambda) r_env + lambda m 1[judge prefers], m = 1
                assert t.reward - (1 - lam) * s.reward in (pytest.approx(0.0, abs=1e-12), pytest.approx(lam, abs=1e-12))
    m = res.metrics
    assert m["decided_rate"] == decided / 2
    for k in ("debate_justified_rate", "decision_accuracy"):  # only a decided episode can be justified or correct
        assert 0.0 <= m[k] <= m["decided_rate"], k
    assert -1.0 <= m["debate_outcome_mean"] <= 1.0 and 0.0 <= m["inspected_mean"] <= 3.0


@pytest.mark.parametrize("method", ["bad", "ppo-action"])
def test_token_critic_methods_refuse_the_llm_policy(method):
    """POAD/BAD and action-level PPO need a token-level critic, implemented for the small policies only."""
    cfg = AgentConfig(env=SOKOBAN, policy="llm", method=method, group_size=2, out="unused")
    with pytest.raises(ValueError, match=r"the LLM policy's token critic is not implemented") as exc:
        cfg.validate()
    assert "--policy small" in str(exc.value) and "--policy tokens" in str(exc.value)

"""T-PPO (``--advantage t-ppo``): extended GAE with the last-value rule, no score for unfinished responses, token filters.

Hand-derived values on a two-row batch (one finished, one unfinished response), then trainer steps on the tiny model.
"""

from types import SimpleNamespace

import pytest
import torch

from polab.estimators.gae import masked_whiten
from polab.scaled.methods import ADVANTAGES
from polab.scaled.methods.tppo import TPPOAdvantage

# Two rows of 3 response tokens. Row 0 finished (EOS on its 3rd token), row 1 unfinished (no EOS yet).
# Critic values V(s_0..s_2) and the value at an extra position after the last token (V(s_3)):
VALUES = torch.tensor([[0.2, 0.4, 0.6, 0.9],
                       [0.5, 0.8, 1.0, 0.7]])
LAMBDA = 0.5


class _FixedCritic(torch.nn.Module):
    def forward(self, input_ids, attention_mask, prompt_length):
        return VALUES.clone()


def _fake(window_start=None, trained=None, scores=(1.0, 1.0)):
    """A stand-in trainer and rollout for TPPOAdvantage.compute (no model: the critic returns VALUES)."""
    batch = SimpleNamespace(input_ids=torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 5, dtype=torch.long),
                            prompt_length=2, truncated=torch.tensor([False, True]))
    if window_start is not None:
        batch.window_start = torch.tensor(window_start)
    if trained is not None:
        batch.trained = torch.tensor(trained)
    cfg = SimpleNamespace(samples_per_prompt=2, kl_coef=0.0, temperature=1.0)
    trainer = SimpleNamespace(cfg=cfg, device=torch.device("cpu"), ref=None)
    rollout = SimpleNamespace(batch=batch, response_mask=torch.ones(2, 3), rewards=torch.tensor(scores))
    est = ADVANTAGES.build("t-ppo", {"gae_lambda": LAMBDA})
    est.critic = _FixedCritic()
    return est, trainer, rollout


def test_registered_with_its_own_options():
    assert ADVANTAGES.get("t-ppo") is TPPOAdvantage and ADVANTAGES.canonical("tppo") == "t-ppo"
    assert TPPOAdvantage.validate(TPPOAdvantage.Options(gamma=1.5), None)


def test_hand_derived_returns_advantages_and_masks():
    est, trainer, roll = _fake()
    res = est.compute(trainer, roll)
    li = res.loss_inputs
    # Row 0 (finished, gamma = 1, lambda = 1/2): rewards (0, 0, 1);
    #   deltas d2 = 1 - 0.6 = 0.4, d1 = 0.6 - 0.4 = 0.2, d0 = 0.4 - 0.2 = 0.2;
    #   A2 = 0.4, A1 = 0.2 + 0.5*0.4 = 0.4, A0 = 0.2 + 0.5*0.4 = 0.4; returns A + V = (0.6, 0.8, 1.0).
    # Row 1 (unfinished): no score, rewards (0, 0, 0); last-value rule V(s_3) := V(s_2) = 1.0 (the 0.7 at the extra
    #   position is never read): d2 = 1.0 - 1.0 = 0, d1 = 1.0 - 0.8 = 0.2, d0 = 0.8 - 0.5 = 0.3;
    #   A2 = 0, A1 = 0.2, A0 = 0.3 + 0.5*0.2 = 0.4; returns (0.9, 1.0, 1.0).
    raw = torch.tensor([[0.4, 0.4, 0.4], [0.4, 0.2, 0.0]])
    ret = torch.tensor([[0.6, 0.8, 1.0], [0.9, 1.0, 1.0]])
    assert torch.allclose(li["raw_advantages"], raw, atol=1e-6)  # float32 (STYLE.md)
    assert torch.allclose(li["returns"], ret, atol=1e-6)
    assert torch.equal(li["token_rewards"], torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]))
    # policy: every generated token (full-length rollout); critic: the finished row only
    assert torch.equal(li["policy_mask"], torch.ones(2, 3)) and torch.equal(res.loss_mask, torch.ones(2, 3))
    assert torch.equal(li["value_mask"], torch.tensor([[1.0, 1, 1], [0, 0, 0]]))
    # advantages whitened as verl does (Bessel variance) over the policy tokens
    assert torch.allclose(res.token, masked_whiten(raw, torch.ones(2, 3), unbiased=True), atol=1e-6)
    assert res.metrics["unfinished_rate"] == 0.5


def test_truncated_response_gets_no_score_and_no_bootstrap():
    """The old ``--gae-truncation bootstrap`` reading gave the unfinished row its score AND V(s_3): return 1 + 0.7 = 1.7 at its last
    token. T-PPO: no score, V(s_3) = V(s_2) = 1.0, so the return there is 1.0, and it does not depend on the task's score."""
    for score in (1.0, 0.0, -3.0):
        est, trainer, roll = _fake(scores=(1.0, score))
        ret = est.compute(trainer, roll).loss_inputs["returns"]
        assert ret[1, 2].item() == pytest.approx(1.0, abs=1e-6) and ret[1, 2].item() != pytest.approx(1.7)
        assert ret[0, 2].item() == pytest.approx(1.0, abs=1e-6)  # the finished row keeps its score: 1 + 0 (terminal)


def test_window_token_filter():
    # row 0 generated its tokens 1-2 in this window (finished now); row 1 only its token 2 (still unfinished)
    est, trainer, roll = _fake(window_start=[1, 2])
    res = est.compute(trainer, roll)
    pm = torch.tensor([[0.0, 1, 1], [0, 0, 1]])
    assert torch.equal(res.loss_mask, pm) and torch.equal(res.token == 0, pm == 0)
    # GAE still runs over the whole response: the same raw advantages as with window_start 0
    assert torch.allclose(res.loss_inputs["raw_advantages"], torch.tensor([[0.4, 0.4, 0.4], [0.4, 0.2, 0.0]]), atol=1e-6)
    # a row that finished in an earlier window (trained=False) enters neither loss
    est, trainer, roll = _fake(window_start=[3, 2], trained=[False, True])
    res = est.compute(trainer, roll)
    assert torch.equal(res.loss_mask, torch.tensor([[0.0, 0, 0], [0, 0, 1]]))
    assert float(res.loss_inputs["value_mask"].sum()) == 0.0


def test_trainer_step_full_length_rollout(tmp_path):
    """A t-ppo step of the trainer (full-length rollout): critic trained on finished rows only, policy on every token."""
    from polab.scaled.trainers.grpo import GRPOTrainer
    from tests.scaled.grpo_fixtures import DistinctCharsTask, tiny_config
    from tests.scaled.test_tppo_windowed import eos_bias

    tr = GRPOTrainer(tiny_config(tmp_path, advantage="t-ppo", max_new_tokens=6), task=DistinctCharsTask((1, 2)))
    eos_bias(tr.policy, tr.tokenizer.eos_token_id)
    res = tr.train_step()
    li = res.loss_inputs
    m, tr_rows = li["batch"].response_mask.float(), li["truncated"]
    assert bool(tr_rows.any()) and bool((~tr_rows).any())  # both kinds present (EOS bias; seed 0)
    assert torch.equal(li["mask"], m)
    # unfinished rows: no score on any token; finished rows: the score on the last token
    assert float(li["token_rewards"][tr_rows].abs().sum()) == 0.0
    # the critic's head starts at zero, so the first value loss is 1/2 * token-mean of returns^2 over the finished rows
    vm = li["value_mask"]
    assert torch.equal(vm, m * (~tr_rows).float()[:, None])
    # rel 1e-6: float32 sums in a different order (STYLE.md float32 tolerance)
    assert res.metrics["value_loss"] == pytest.approx(float(0.5 * (li["returns"] ** 2 * vm).sum() / vm.sum()), rel=1e-6)

"""The seeds' sequence-level preference methods (CoPG, OPA-DPO, GEPO) selected by name in the preference trainer.

One CPU smoke step per method on ``tiny-llama`` (random 2-layer Llama, SmolLM2
tokenizer; see tests/scaled/test_preference_trainer.py): the trainer's loss is
the core loss recomputed on the very tensors it used, and every parameter moves.
"""

from __future__ import annotations

import pytest
import torch

from polab.estimators.contrastive_pg import CoPGLoss
from polab.estimators.group_preference import GEPOLoss, OPADPOLoss
from polab.estimators.preference_losses import METHOD_SCHEMES, PREFERENCE_SCHEMES, SAMPLING_SCHEMES, scheme_loss
from polab.scaled.trainers.preference import PreferenceTrainer, config_from_preset

RESULT_TYPE = {"copg": CoPGLoss, "opa_dpo": OPADPOLoss, "gepo": GEPOLoss}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; a busy 2-core machine is much slower with 2 intra-op threads
    yield
    torch.set_num_threads(n)


def test_method_schemes_are_registered_apart_from_the_paper_comparison():
    assert set(METHOD_SCHEMES) == {f"{s}-{m}" for s in ("offline", "on-policy") for m in ("copg", "opa-dpo", "gepo")}
    assert not set(METHOD_SCHEMES) & set(SAMPLING_SCHEMES)
    assert set(PREFERENCE_SCHEMES) == set(METHOD_SCHEMES) | set(SAMPLING_SCHEMES)
    assert all(sc.has_negative_gradient for sc in METHOD_SCHEMES.values())


@pytest.mark.parametrize("scheme", ["on-policy-copg", "offline-opa-dpo", "on-policy-gepo"])
def test_tiny_trainer_step_uses_the_core_loss_and_moves_every_parameter(tmp_path, scheme):
    cfg = config_from_preset("tiny", scheme=scheme, out=str(tmp_path / scheme), steps=1, samples_per_prompt=4)
    tr = PreferenceTrainer(cfg)
    before = {k: v.detach().clone() for k, v in tr.policy.named_parameters()}
    res = tr.train_step()
    li = res.loss_inputs
    assert li["loss"] is not None, "no informative pair or group in this step"
    core = scheme_loss(PREFERENCE_SCHEMES[scheme], li["logp"], li["ref_logp"], li["rewards"], li["group_ids"],
                       beta=cfg.beta, label_smoothing=cfg.label_smoothing, pairing=cfg.pairing, **tr.scheme.method_loss_kwargs())
    assert isinstance(core, RESULT_TYPE[PREFERENCE_SCHEMES[scheme].loss])
    assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)  # float32
    changed = [k for k, v in tr.policy.named_parameters() if not torch.equal(v.detach(), before[k])]
    assert len(changed) == len(before), set(before) - set(changed)
    assert res.metrics["num_pairs"] >= 1 and res.metrics["pair_accuracy"] == res.metrics["pair_accuracy"]  # logged, not NaN
    tr.logger.close()


def test_config_rejects_unknown_scheme_and_bad_options(tmp_path):
    with pytest.raises(ValueError, match="--scheme: unknown preference loss 'on-policy-dapo'"):
        config_from_preset("tiny", scheme="on-policy-dapo", out=str(tmp_path / "x")).validate()
    with pytest.raises(ValueError, match="opa_anchor"):
        config_from_preset("tiny", scheme="on-policy-opa-dpo", opa_anchor="hinge", out=str(tmp_path / "y")).validate()


def test_cli_lists_the_new_schemes(capsys):
    from polab.scaled.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "preference", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "on-policy-copg" in out and "--on-policy-gepo.consistency-coef" in out


@pytest.mark.llm
@pytest.mark.parametrize("scheme", ["on-policy-copg"])
def test_one_real_step_on_smollm2(tmp_path, scheme):
    cfg = config_from_preset("cpu-demo", scheme=scheme, out=str(tmp_path / "llm"), steps=1, prompts_per_step=2,
                             samples_per_prompt=2, max_new_tokens=8, tensorboard=False, progress=False)
    tr = PreferenceTrainer(cfg)
    w = tr.policy.get_input_embeddings().weight
    before = w.detach().clone()
    res = tr.train_step()
    assert 0 < res.metrics["policy_reward"] <= 1
    li = res.loss_inputs
    assert li["loss"] is not None  # CoPG uses every within-prompt pair, ties included
    assert not torch.equal(before, w.detach())
    core = scheme_loss(scheme, li["logp"], li["ref_logp"], li["rewards"], li["group_ids"], beta=cfg.beta,
                       **tr.scheme.method_loss_kwargs())
    assert float(core.loss) == pytest.approx(float(li["loss"]), rel=1e-6)
    tr.logger.close()

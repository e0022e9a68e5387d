"""Entity-attention and flat actor-critics (polab.scaled.control.entity_policies).

Tolerances: float32 networks; permuting entities changes only the order of the sums inside the
embedding-free parts (attention key sums, pooling), so outputs agree to float32 rounding: 1e-5
absolute on logits of size ~1e-2..1 (a few ulps of the accumulated sums, 16 terms).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

from polab.scaled.control.entity_policies import (  # noqa: E402
    EntityActorCritic,
    EntityEmbedding,
    FixedOutputs,
    FlatActorCritic,
    check_entity_input,
    make_entity_actor_critic,
    masked_max,
    masked_mean,
    pack_observation,
)
from polab.scaled.envs.roguelike import ATTRIBUTE_CARDINALITIES, DESIGNS, RoguelikeVectorEnv  # noqa: E402

CARD = ATTRIBUTE_CARDINALITIES
ATOL = 1e-5  # float32, see module docstring


def _batch(n=32, design="combined", seed=0, steps=3):
    env = RoguelikeVectorEnv(DESIGNS[design], n)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):  # a few moves so that hit points and offsets vary
        obs, *_ = env.step(rng.integers(4, size=n))
    return pack_observation(obs)


def _nets():
    torch.manual_seed(0)
    ent = EntityActorCritic(CARD, 4, dim=16, heads=2, blocks=2, hidden=32)
    # larger output gains than the PPO initialisation so that the outputs are not all ~0
    for head in (ent.pi, ent.v):
        torch.nn.init.normal_(head.weight, std=1.0)
    return ent


def test_pack_observation_layout():
    env = RoguelikeVectorEnv(DESIGNS["train"], 3)
    obs, _ = env.reset(seed=1)
    x = pack_observation(obs)
    assert x.shape == (3, 16, 5) and x.dtype == torch.long
    np.testing.assert_array_equal(x[..., :4].numpy(), obs["entities"])
    np.testing.assert_array_equal(x[..., 4].numpy(), obs["mask"])
    single = pack_observation({"entities": obs["entities"][0], "mask": obs["mask"][0]})
    assert single.shape == (1, 16, 5)


def test_entity_network_is_permutation_invariant():
    net = _nets()
    x = _batch()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        logits, value = net(x)
        for _ in range(5):
            perm = torch.randperm(x.shape[1], generator=g)  # mixes real and padding slots
            lp, vp = net(x[:, perm])
            torch.testing.assert_close(lp, logits, atol=ATOL, rtol=0)
            torch.testing.assert_close(vp, value, atol=ATOL, rtol=0)
            p, pp = torch.softmax(logits, -1), torch.softmax(lp, -1)
            assert float((p - pp).abs().max()) < ATOL
    assert float(logits.std()) > 1e-2  # the outputs are not constant (the test has something to compare)


def test_entity_network_ignores_padding_contents_and_count():
    net = _nets()
    x = _batch()
    mask = x[..., -1].bool()
    g = torch.Generator().manual_seed(2)
    garbage = x.clone()
    noise = torch.randint(-50, 50, garbage[..., :-1].shape, generator=g)
    garbage[..., :-1] = torch.where(mask[..., None], garbage[..., :-1], noise)  # any values, even out of range
    wider = torch.cat([x, torch.zeros(x.shape[0], 9, x.shape[2], dtype=x.dtype)], dim=1)  # 9 more padding slots
    with torch.no_grad():
        ref = net(x)
        for other in (garbage, wider):
            out = net(other)
            torch.testing.assert_close(out[0], ref[0], atol=ATOL, rtol=0)
            torch.testing.assert_close(out[1], ref[1], atol=ATOL, rtol=0)


def test_flat_network_is_not_permutation_invariant():
    """The baseline depends on slot order (so the invariance test above can fail for a network that isn't)."""
    torch.manual_seed(0)
    flat = FlatActorCritic(CARD, 4, 16, hidden=32)
    torch.nn.init.normal_(flat.actor[-1].weight, std=1.0)
    x = _batch()
    perm = torch.arange(16).flip(0)
    with torch.no_grad():
        assert float((flat.logits(x) - flat.logits(x[:, perm])).abs().max()) > 1e-2


def test_dense_embedding_equals_a_linear_layer_on_concatenated_one_hots():
    """sum_k W_k[x_k] + b = W [onehot(x_1), ..., onehot(x_F)] + b (the authors' width-1 convolution), then tanh."""
    torch.manual_seed(3)
    emb = EntityEmbedding(CARD, 8)
    torch.nn.init.normal_(emb.bias)
    x = _batch(8)[..., :4]
    onehot = torch.cat([torch.nn.functional.one_hot(x[..., k], c).double() for k, c in enumerate(CARD)], dim=-1)
    W = torch.cat([t.weight.double() for t in emb.tables], dim=0)  # [sum(cardinalities), d]
    expected = torch.tanh(onehot @ W + emb.bias.double())
    torch.testing.assert_close(emb(x).double(), expected, atol=ATOL, rtol=0)


def test_masked_pooling_matches_a_loop():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(6, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 7, generator=g) < 0.5
    mask[:, 0] = True
    mean, mx = masked_mean(h, mask), masked_max(h, mask)
    for b in range(6):
        rows = h[b][mask[b]]
        torch.testing.assert_close(mean[b], rows.mean(0), atol=1e-12, rtol=0)
        torch.testing.assert_close(mx[b], rows.max(0).values, atol=0, rtol=0)


def test_forward_equals_logits_and_value_and_fixed_outputs():
    x = _batch(8)
    for net in (_nets(), FlatActorCritic(CARD, 4, 16)):
        with torch.no_grad():
            logits, value = net(x)
            torch.testing.assert_close(logits, net.logits(x), atol=0, rtol=0)
            torch.testing.assert_close(value, net.value(x), atol=0, rtol=0)
        fixed = FixedOutputs(logits, value)
        assert fixed.logits(x) is logits and fixed.value(x) is value
        with pytest.raises(ValueError, match="rows"):
            fixed.logits(x[:3])


def test_gradients_reach_every_parameter_of_the_entity_network():
    net = _nets()
    logits, value = net(_batch(8))
    (logits.logsumexp(-1).sum() + value.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    zero = [n for n, p in net.named_parameters() if float(p.grad.abs().max()) == 0.0]
    # embedding rows for categories absent from the batch get zero gradient; whole tensors never do
    assert zero == []


def test_bad_inputs_raise_value_errors():
    net = _nets()
    x = _batch(2)
    with pytest.raises(ValueError, match=r"\[B, E, 5\]"):
        net(x[..., :4])
    with pytest.raises(ValueError, match="integers"):
        net(x.float())
    bad = x.clone()
    bad[0, 0, 1] = 99
    with pytest.raises(ValueError, match="outside"):
        net(bad)
    empty = x.clone()
    empty[0, :, -1] = 0
    with pytest.raises(ValueError, match="at least one real entity"):
        net(empty)
    two = x.clone()
    two[0, 0, -1] = 2
    with pytest.raises(ValueError, match="mask"):
        check_entity_input(two, CARD)
    with pytest.raises(ValueError, match="slots"):
        FlatActorCritic(CARD, 4, 12)(x)
    with pytest.raises(ValueError, match="architecture"):
        make_entity_actor_critic("cnn", CARD, 4, 16)
    with pytest.raises(ValueError, match="divisible"):
        EntityActorCritic(CARD, 4, dim=15, heads=2)


def test_joint_encoding_gives_unseen_type_power_pairs_their_own_input_units():
    """flat-id: (type, power) -> one unit type * c_power + power; factored: two units shared with other pairs."""
    x = _batch(4)
    joint = FlatActorCritic(CARD, 4, 16, encoding="joint")
    fact = FlatActorCritic(CARD, 4, 16)
    codes_joint = CARD[0] * CARD[1] + CARD[2] + CARD[3] + 1
    assert joint.features(x).shape == (4, 16 * codes_joint)
    assert fact.features(x).shape == (4, 16 * (sum(CARD) + 1))
    f = joint.features(x).view(4, 16, codes_joint)
    b, e = 0, 2  # slot 2 holds an enemy (type 2)
    t, p = int(x[b, e, 0]), int(x[b, e, 1])
    assert f[b, e, t * CARD[1] + p] == 1 and f[b, e, : CARD[0] * CARD[1]].sum() == 1
    assert make_entity_actor_critic("flat-id", CARD, 4, 16).encoding == "joint"
    with pytest.raises(ValueError, match="encoding"):
        FlatActorCritic(CARD, 4, 16, encoding="hashed")

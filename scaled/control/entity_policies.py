r"""Actor-critics over a padded list of entities with categorical attributes.

:class:`EntityActorCritic` is the kind of network Sestini, Kuhnle and Bagdanov (2020) propose for
NPCs whose world is a variable set of entities: each entity's categorical attributes are embedded
and summed (their "dense embedding"), the entities are related to each other by masked multi-head
self-attention (their Transformer), and a masked pooling over entities gives a fixed-size state.
:class:`FlatActorCritic` is the fixed-layout baseline: the same padded array, one-hot encoded slot
by slot and flattened into an MLP.

Input convention
----------------
Both networks take one integer tensor ``x`` of shape ``[B, E, F + 1]``: the ``F`` categorical
attributes of each of ``E`` entity slots, and in the last column the mask (1 = real entity,
0 = padding). :func:`pack_observation` builds it from the environment's ``{"entities", "mask"}``
observation. Networks have ``logits(x) -> [B, A]`` and ``value(x) -> [B]``, the interface of
:func:`polab.scaled.control.ppo.ppo_minibatch_loss`.

Entity network (one trunk shared by the policy and value heads)::

    e_i = tanh(sum_k W_k[x_ik] + b)                      # dense embedding of entity i    [B, E, d]
    h   = e + MHA(LN(e), mask)                           # masked self-attention (keys)
    h   = h + FFN(LN(h))                                 # position-wise feed-forward
    z   = tanh(W [mean_{i: m_i=1} h_i, max_{i: m_i=1} h_i, h_agent] + c)   # pooling     [B, hidden]
    logits = W_pi z + c_pi,   value = w_v . z + c_v

Properties (tested): the output is invariant to any permutation of the entity slots (sum over
attributes, self-attention and pooling are all permutation equivariant/invariant), and padding
slots have no effect whatever they contain (their attributes are zeroed before the embedding,
they are excluded as attention keys and from the pooling).

Notes
-----
What follows the authors' code (SestoAle/Adaptive-NPCs-with-procedural-entities @ fa7430da):
the per-entity embedding of the attribute vector by a width-1 convolution with tanh
(``net_structures/net_structures.py``, ``conv1d`` size 64, ``tanh``; on a one-hot/multi-hot
attribute vector that is a sum of per-attribute embedding rows plus a bias, which is what
:class:`EntityEmbedding` computes), the masked multi-head self-attention with 2 heads, a residual
connection and layer normalisation, and masked average / max pooling over entities
(``new_layers/Transformer.py``: ``Transformer``, ``stable_masked_softmax``,
``entity_avg_pooling_masked``, ``entity_max_pooling_masked``).
Departures: the authors scatter the contextualised entity embeddings back onto map cells and run
convolutions over three map crops (``ScatterEmbedding``); polab's roguelike state *is* the entity
list (relative positions are attributes), so the embeddings are pooled directly (the layer's
``pooling='avg'``/``'max'`` options, here concatenated). Widths are smaller (CPU budget).

References
----------
A. Sestini, A. Kuhnle, A. D. Bagdanov, "Deep Policy Networks for NPC Behaviors that Adapt to
Changing Design Parameters in Roguelike Games", arXiv:2012.03532 (2020).
A. Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "pack_observation", "check_entity_input", "masked_mean", "masked_max", "EntityEmbedding",
    "MaskedSelfAttentionBlock", "EntityTrunk", "FixedOutputs", "EntityActorCritic", "FlatActorCritic", "make_entity_actor_critic",
    "ARCHITECTURES",
]

#: Network names accepted by :func:`make_entity_actor_critic`.
ARCHITECTURES = ("entity", "flat", "flat-id")


def pack_observation(obs: dict, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Stack ``obs["entities"]`` ``[B, E, F]`` and ``obs["mask"]`` ``[B, E]`` into a long tensor ``[B, E, F + 1]``.

    A single (unbatched) observation ``[E, F]`` / ``[E]`` gives ``[1, E, F + 1]``.
    """
    ent = np.asarray(obs["entities"])
    mask = np.asarray(obs["mask"])
    if ent.ndim == 2:
        ent, mask = ent[None], mask[None]
    if ent.ndim != 3 or mask.shape != ent.shape[:2]:
        raise ValueError(f"obs['entities'] must be [B, E, F] and obs['mask'] [B, E]; got {ent.shape} and {mask.shape}.")
    x = np.concatenate([ent.astype(np.int64), mask.astype(np.int64)[..., None]], axis=-1)
    return torch.as_tensor(x, device=device)


def check_entity_input(x: torch.Tensor, cardinalities: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` ``[B, E, F + 1]`` into attributes (padding rows zeroed) and a bool mask, checking it.

    Raises ``ValueError`` when the shape, dtype or mask is wrong, when a row has no real entity, or
    when a real entity's attribute is outside ``0 .. cardinality - 1``.
    """
    F_ = len(cardinalities)
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != F_ + 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor [B, E, {F_ + 1}] (attributes + mask); got {shape}. Use pack_observation().")
    if x.dtype.is_floating_point or x.dtype == torch.bool:
        raise ValueError(f"x must hold integers (categorical attributes); got dtype {x.dtype}.")
    m = x[..., F_]
    if bool(((m != 0) & (m != 1)).any()):
        raise ValueError("x[..., -1] (the mask) must be 0 or 1.")
    mask = m.bool()
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every row of x needs at least one real entity (mask all zero in some row).")
    attrs = torch.where(mask[..., None], x[..., :F_], torch.zeros((), dtype=x.dtype, device=x.device))
    card = torch.as_tensor(list(cardinalities), device=x.device)
    if bool(((attrs < 0) | (attrs >= card)).any()):
        raise ValueError(f"an attribute of a real entity is outside 0..cardinality-1 (cardinalities {tuple(cardinalities)}).")
    return attrs, mask


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` ``[B, E, d]`` over the entities with ``mask`` ``[B, E]`` true -> ``[B, d]``."""
    w = mask.to(h.dtype)[..., None]
    return (h * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def masked_max(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Maximum of ``h`` ``[B, E, d]`` over the entities with ``mask`` ``[B, E]`` true -> ``[B, d]``."""
    return h.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)


def _linear(i: int, o: int, gain: float) -> nn.Linear:
    layer = nn.Linear(i, o)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class EntityEmbedding(nn.Module):
    r"""Dense embedding of categorical attributes: :math:`e_i = \tanh(\sum_k W_k[x_{ik}] + b)`.

    Equivalent to a linear layer (the authors' width-1 convolution) on the concatenated one-hot
    encodings of the attributes, followed by tanh.

    Parameters
    ----------
    cardinalities : sequence of int
        Number of categories of each attribute.
    dim : int
        Embedding width ``d``.
    """

    def __init__(self, cardinalities: Sequence[int], dim: int):
        super().__init__()
        self.cardinalities = tuple(int(c) for c in cardinalities)
        self.tables = nn.ModuleList(nn.Embedding(c, dim) for c in self.cardinalities)
        for t in self.tables:
            nn.init.normal_(t.weight, std=1.0 / math.sqrt(len(self.cardinalities)))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, attrs: torch.Tensor) -> torch.Tensor:
        """``attrs`` long ``[B, E, F]`` -> ``[B, E, d]``."""
        s = self.bias
        for k, table in enumerate(self.tables):
            s = s + table(attrs[..., k])
        return torch.tanh(s)


class MaskedSelfAttentionBlock(nn.Module):
    """Pre-norm Transformer block over entities; padding entities are never attended to.

    ``h = x + MHA(LN(x)); out = h + FFN(LN(h))`` with ``heads`` heads and key mask ``mask``.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}.")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = _linear(dim, 3 * dim, 1.0)
        self.proj = _linear(dim, dim, 1.0)
        self.ffn = nn.Sequential(_linear(dim, ffn_dim, math.sqrt(2)), nn.ReLU(), _linear(ffn_dim, dim, 1.0))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, E, d]``, ``mask`` bool ``[B, E]`` -> ``[B, E, d]``."""
        B, E, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, E, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # keys masked
        h = x + self.proj(att.transpose(1, 2).reshape(B, E, d))
        return h + self.ffn(self.norm2(h))


class EntityTrunk(nn.Module):
    """Embedding -> self-attention blocks -> masked pooling -> ``tanh`` layer: ``[B, E, F+1] -> [B, hidden]``.

    The pooled state concatenates the masked mean and maximum over entities and, when
    ``readout_type`` is given, the mean over the entities whose ``type`` attribute (column 0)
    equals it (the acting agent's own contextualised embedding; zeros if there is none). All three
    are chosen by mask and attribute, never by slot, so the trunk stays permutation invariant.
    """

    def __init__(self, cardinalities: Sequence[int], *, dim: int = 32, heads: int = 2, blocks: int = 1, hidden: int = 64,
                 readout_type: int | None = 0):
        super().__init__()
        self.cardinalities = tuple(int(c) for c in cardinalities)
        if readout_type is not None and not 0 <= readout_type < self.cardinalities[0]:
            raise ValueError(f"readout_type must be None or a type index in 0..{self.cardinalities[0] - 1}; got {readout_type!r}.")
        self.readout_type = readout_type
        self.embed = EntityEmbedding(self.cardinalities, dim)
        self.blocks = nn.ModuleList(MaskedSelfAttentionBlock(dim, heads, 2 * dim) for _ in range(blocks))
        self.out = _linear((2 if readout_type is None else 3) * dim, hidden, math.sqrt(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attrs, mask = check_entity_input(x, self.cardinalities)
        h = self.embed(attrs)
        for block in self.blocks:
            h = block(h, mask)
        pooled = [masked_mean(h, mask), masked_max(h, mask)]
        if self.readout_type is not None:  # the acting entity's own contextualised embedding, found by its type
            pooled.append(masked_mean(h, mask & (attrs[..., 0] == self.readout_type)))
        return torch.tanh(self.out(torch.cat(pooled, dim=-1)))


class EntityActorCritic(nn.Module):
    """One entity trunk (:class:`EntityTrunk`) shared by a policy head and a value head.

    ``forward(x)`` returns both from one trunk pass; ``logits(x)`` and ``value(x)`` run the trunk
    each (the interface of :func:`polab.scaled.control.ppo.ppo_minibatch_loss`; a training loop that
    wants one pass per minibatch passes it a :class:`FixedOutputs` of ``forward``'s results).

    Parameters
    ----------
    cardinalities : sequence of int
        Categories per attribute (``polab.scaled.envs.roguelike.ATTRIBUTE_CARDINALITIES``).
    num_actions : int
    dim, heads, blocks, hidden : int
        Embedding width, attention heads, Transformer blocks, width of the pooled state.
    readout_type : int or None
        Type index of the acting entity whose embedding joins the pooled state (:class:`EntityTrunk`).
    """

    def __init__(self, cardinalities: Sequence[int], num_actions: int, *, dim: int = 32, heads: int = 2, blocks: int = 1,
                 hidden: int = 64, readout_type: int | None = 0):
        super().__init__()
        self.trunk = EntityTrunk(cardinalities, dim=dim, heads=heads, blocks=blocks, hidden=hidden, readout_type=readout_type)
        self.pi = _linear(hidden, num_actions, 0.01)
        self.v = _linear(hidden, 1, 1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, E, F + 1]`` -> (logits ``[B, A]``, values ``[B]``)."""
        z = self.trunk(x)
        return self.pi(z), self.v(z).squeeze(-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, E, F + 1]`` -> action logits ``[B, A]``."""
        return self.pi(self.trunk(x))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, E, F + 1]`` -> state values ``[B]``."""
        return self.v(self.trunk(x)).squeeze(-1)


class FixedOutputs:
    """Stands in for a network whose outputs on one minibatch were computed already (one forward pass).

    ``logits(x)`` and ``value(x)`` return the given tensors whatever ``x`` is (its batch size is checked).
    """

    def __init__(self, logits: torch.Tensor, value: torch.Tensor):
        if logits.ndim != 2 or value.shape != logits.shape[:1]:
            raise ValueError(f"logits must be [B, A] and value [B]; got {tuple(logits.shape)} and {tuple(value.shape)}.")
        self._logits, self._value = logits, value

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self._logits.shape[0]:
            raise ValueError(f"FixedOutputs holds {self._logits.shape[0]} rows; got a batch of {x.shape[0]}.")
        return self._logits

    def value(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self._value.shape[0]:
            raise ValueError(f"FixedOutputs holds {self._value.shape[0]} rows; got a batch of {x.shape[0]}.")
        return self._value


class FlatActorCritic(nn.Module):
    """Fixed-layout baseline: each slot one-hot encoded (zero for padding), flattened with the mask, into MLPs.

    Separate two-layer tanh MLPs for logits and value (as :class:`polab.scaled.control.policies.MLPActorCritic`).
    The number of slots ``max_entities`` is fixed by the input width.

    ``encoding="factored"``: every attribute one-hot on its own (a slot's code is the concatenation,
    so a new combination of known attribute values gets a code made of trained parts: the paper's
    "dense embedding" idea, per slot). ``encoding="joint"``: the first two attributes (type and
    power) get one joint one-hot code over their ``c_0 c_1`` combinations, the others one-hot each:
    an unseen (type, power) pair lands on an input unit that training never activated, like the
    paper's DeepCrawl baseline, which gives every distinct item one categorical index.
    """

    def __init__(self, cardinalities: Sequence[int], num_actions: int, max_entities: int, *, hidden: int = 64,
                 encoding: str = "factored"):
        super().__init__()
        if encoding not in ("factored", "joint"):
            raise ValueError(f"encoding must be 'factored' or 'joint'; got {encoding!r}.")
        self.cardinalities, self.max_entities, self.encoding = tuple(int(c) for c in cardinalities), int(max_entities), encoding
        if encoding == "joint" and len(self.cardinalities) < 2:
            raise ValueError("encoding='joint' needs at least two attributes (type and power).")
        codes = (self.cardinalities[0] * self.cardinalities[1] + sum(self.cardinalities[2:]) if encoding == "joint"
                 else sum(self.cardinalities))
        in_dim = self.max_entities * (codes + 1)
        g = math.sqrt(2)

        def mlp(out, gain):
            return nn.Sequential(_linear(in_dim, hidden, g), nn.Tanh(), _linear(hidden, hidden, g), nn.Tanh(),
                                 _linear(hidden, out, gain))

        self.actor, self.critic = mlp(num_actions, 0.01), mlp(1, 1.0)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot slot features ``[B, E * (codes + 1)]``."""
        attrs, mask = check_entity_input(x, self.cardinalities)
        if attrs.shape[1] != self.max_entities:
            raise ValueError(f"x has {attrs.shape[1]} entity slots; this flat network was built for {self.max_entities}.")
        c = self.cardinalities
        if self.encoding == "joint":
            parts = [F.one_hot(attrs[..., 0] * c[1] + attrs[..., 1], c[0] * c[1])]
            parts += [F.one_hot(attrs[..., k], c[k]) for k in range(2, len(c))]
        else:
            parts = [F.one_hot(attrs[..., k], ck) for k, ck in enumerate(c)]
        m = mask[..., None].to(torch.float32)
        return torch.cat([p.to(torch.float32) * m for p in parts] + [m], dim=-1).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, E, F + 1]`` -> (logits ``[B, A]``, values ``[B]``), one one-hot encoding."""
        f = self.features(x)
        return self.actor(f), self.critic(f).squeeze(-1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(self.features(x))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(x)).squeeze(-1)


def make_entity_actor_critic(name: str, cardinalities: Sequence[int], num_actions: int, max_entities: int, *,
                             dim: int = 32, heads: int = 2, blocks: int = 1, hidden: int = 64) -> nn.Module:
    """``"entity"`` -> :class:`EntityActorCritic`; ``"flat"`` / ``"flat-id"`` -> :class:`FlatActorCritic`, factored / joint."""
    if name == "entity":
        return EntityActorCritic(cardinalities, num_actions, dim=dim, heads=heads, blocks=blocks, hidden=hidden)
    if name == "flat":
        return FlatActorCritic(cardinalities, num_actions, max_entities, hidden=hidden)
    if name == "flat-id":
        return FlatActorCritic(cardinalities, num_actions, max_entities, hidden=hidden, encoding="joint")
    raise ValueError(f"architecture must be one of {ARCHITECTURES}; got {name!r}.")

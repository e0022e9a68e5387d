# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # NPC policies over entities: permutation and padding invariance
#
# Sestini, Kuhnle and Bagdanov (arXiv 2012.03532) propose NPC policy networks for roguelikes whose
# state is a set of entities with categorical attributes: each entity's attributes are embedded
# (a "dense embedding", a sum of per-attribute embeddings) and the entities are related by masked
# self-attention, so that the network adapts when designers change the entity mix or the stats.
# This notebook uses polab's proxy game (`polab.scaled.envs.roguelike`, a procedural grid
# roguelike with enemies, potions, walls and an exit) and the networks of
# `polab.scaled.control.entity_policies`, and checks numerically the two structural properties the
# claim rests on: the entity network's action distribution does not change when the entities are
# listed in another order, nor when the padding slots change; the flat-MLP baseline's does.
# The generalisation experiment itself is `polab run npc-roguelike`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

from polab.scaled.control.entity_policies import EntityActorCritic, FlatActorCritic, pack_observation
from polab.scaled.envs.roguelike import ATTRIBUTE_CARDINALITIES, ATTRIBUTES, DESIGNS, ENTITY_TYPES, RoguelikeEnv, RoguelikeVectorEnv
from polab.scaled.experiments.npc_roguelike import NPCRoguelikeConfig, evaluate_policy, train_policy

torch.manual_seed(0)

# %% [markdown]
# ## 1. A level and its observation: a padded entity array plus a mask
# `@h` is the agent with `h` hit points, `>` the exit, `E s` an enemy of strength `s`, `P h` a
# potion healing `h`, `##` a wall. Each row of the observation is one entity: type, power, and
# the offsets `dx`, `dy` from the agent (shifted by the view radius 5).

# %%
env = RoguelikeEnv(DESIGNS["train"], render_mode="ansi")
obs, _ = env.reset(seed=3)
print(env.render())
n = int(obs["mask"].sum())
print("columns:", ATTRIBUTES, "| types:", ENTITY_TYPES)
for row in obs["entities"][:n]:
    print(row, ENTITY_TYPES[row[0]])
print(f"... then {len(obs['mask']) - n} padding rows of zeros; mask:", obs["mask"])
print("shortest plan (exact BFS):", env.solve())

# %% [markdown]
# ## 2. Permutation invariance
# Permute the 16 entity slots of a batch of observations (real and padding slots mixed) and compare
# the action distributions. Both networks are freshly initialised with output weights of scale 1
# so that their outputs are far from uniform.

# %%
venv = RoguelikeVectorEnv(DESIGNS["combined"], 64)
o, _ = venv.reset(seed=0)
x = pack_observation(o)
ent = EntityActorCritic(ATTRIBUTE_CARDINALITIES, 4)
flat = FlatActorCritic(ATTRIBUTE_CARDINALITIES, 4, 16)
torch.nn.init.normal_(ent.pi.weight)
torch.nn.init.normal_(flat.actor[-1].weight)
g = torch.Generator().manual_seed(1)
diffs = {"entity": [], "flat": []}
with torch.no_grad():
    p_ent, p_flat = torch.softmax(ent.logits(x), -1), torch.softmax(flat.logits(x), -1)
    for _ in range(20):
        perm = torch.randperm(16, generator=g)
        diffs["entity"].append(float((torch.softmax(ent.logits(x[:, perm]), -1) - p_ent).abs().max()))
        diffs["flat"].append(float((torch.softmax(flat.logits(x[:, perm]), -1) - p_flat).abs().max()))
for k, v in diffs.items():
    print(f"{k:6s} max |pi(a|permuted) - pi(a|original)| over 20 permutations x 64 states: {max(v):.2e}")
assert max(diffs["entity"]) < 1e-5 < 1e-2 < max(diffs["flat"])

# %% [markdown]
# ## 3. Padding invariance
# Fill the padding slots with arbitrary values, or append 8 more padding slots: the entity
# network's output does not move (padding attributes are zeroed before the embedding, padding is
# never an attention key and is left out of the pooling). The flat network zeroes the one-hot codes
# of padding slots too, so their contents do not matter to it either, but its input width is fixed:
# it cannot take the wider array, and an entity that moves to another slot changes its input.

# %%
mask = x[..., -1].bool()
garbage = x.clone()
garbage[..., :-1] = torch.where(mask[..., None], x[..., :-1], torch.randint(0, 5, x[..., :-1].shape, generator=g))
wider = torch.cat([x, torch.zeros(64, 8, 5, dtype=torch.long)], dim=1)
with torch.no_grad():
    d_garbage = float((torch.softmax(ent.logits(garbage), -1) - p_ent).abs().max())
    d_wider = float((torch.softmax(ent.logits(wider), -1) - p_ent).abs().max())
    d_flat_garbage = float((torch.softmax(flat.logits(garbage), -1) - p_flat).abs().max())
print(f"entity: garbage padding {d_garbage:.1e}, 8 extra padding slots {d_wider:.1e}; flat: garbage padding {d_flat_garbage:.1e}")
try:
    flat.logits(wider)
except ValueError as exc:
    print("flat on 24 slots:", exc)
assert d_garbage < 1e-5 and d_wider < 1e-5

# %% [markdown]
# ## 4. Design changes and the two reference policies
# The held-out designs change the entity mix, the enemy stats and the map size. Success rates on
# the same 40 levels per design: the exact planner (which sees the whole level) and uniform random
# play.

# %%
for name, d in DESIGNS.items():
    s = evaluate_policy(None, name, 40, policy="scripted")["success"]
    r = evaluate_policy(None, name, 40, policy="random")["success"]
    print(f"{name:15s} map {d.map_size:2d}  enemies {d.enemies}  strengths {d.enemy_strengths}  planner {s:.2f}  random {r:.2f}")

# %% [markdown]
# ## 5. A tiny PPO run of the entity network
# A few thousand steps on the training design (the experiment uses 100k per run and 5 seeds):
# the success rate of the episodes that end in each rollout starts to rise from the random level.

# %%
cfg = NPCRoguelikeConfig(total_steps=6144, num_envs=16, rollout_steps=32, progress=False)
net, rows = train_policy("entity", cfg, seed=0)
steps = [r["steps"] for r in rows]
plt.figure(figsize=(5, 3))
plt.plot(steps, [r["success_rate"] for r in rows], marker="o", label="entity network, seed 0")
plt.axhline(evaluate_policy(None, "train", 40, policy="random")["success"], color="gray", ls="--", label="uniform random")
plt.xlabel("environment steps")
plt.ylabel("success rate (rollout episodes)")
plt.ylim(0, 1)
plt.legend()
plt.tight_layout()
plt.show()

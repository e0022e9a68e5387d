r"""Drawing prompts through a polab curriculum scheduler, shared by the TRL and verl adapters.

The draw is the one of the DUMP authors' sampler (``shared/notes/theory_core.md``
1.3): a source :math:`j \sim p` with :math:`p` = ``scheduler.probabilities()``,
then a row of that source uniformly with replacement. Imports neither TRL nor verl.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["draw_prompts", "generation_seed", "source_pools", "per_response_advantages"]


def generation_seed(seed: int, generation: int) -> int:
    """A 63-bit seed for draw number ``generation`` of a run seeded ``seed`` (numpy ``SeedSequence`` mixing)."""
    if int(generation) < 0:
        raise ValueError(f"generation must be >= 0; got {generation}.")
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(generation)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def draw_prompts(
    probabilities: Sequence[float] | np.ndarray,
    pools: Sequence[Sequence[int]],
    n_prompts: int,
    *,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n_prompts`` (source, row) pairs: source ~ probabilities, row uniform within the source.

    Parameters
    ----------
    probabilities : array [K]
        Sampling distribution over sources (finite, non-negative, sums to 1
        within 1e-9, the float64 rounding of a softmax over a few thousand
        sources).
    pools : sequence of K sequences of int
        Dataset row indices of each source; a source with positive
        probability must have at least one row.
    n_prompts : int
        Number of prompts, >= 0.
    generator : torch.Generator
        CPU generator; the only source of randomness.

    Returns
    -------
    sources, rows : int64 tensors [n_prompts]
        The source index and the dataset row of each prompt.
    """
    if not isinstance(generator, torch.Generator):
        raise ValueError("draw_prompts needs a torch.Generator passed as generator=...; it never uses global RNG state.")
    p = torch.as_tensor(np.asarray(probabilities, dtype=np.float64))
    if p.ndim != 1 or p.numel() != len(pools):
        raise ValueError(f"probabilities must have shape [K] with K = len(pools) = {len(pools)}; got {tuple(p.shape)}.")
    if not torch.isfinite(p).all() or (p < 0).any() or abs(float(p.sum()) - 1.0) > 1e-9:
        raise ValueError(f"probabilities must be finite, non-negative and sum to 1; got {p.tolist()}.")
    empty = [j for j, pool in enumerate(pools) if len(pool) == 0 and p[j] > 0]
    if empty:
        raise ValueError(f"sources {empty} have positive probability but no rows; give every source at least one row.")
    if int(n_prompts) < 0:
        raise ValueError(f"n_prompts must be >= 0; got {n_prompts}.")
    if n_prompts == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    sources = torch.multinomial(p, int(n_prompts), replacement=True, generator=generator)
    rows = torch.empty(int(n_prompts), dtype=torch.int64)
    for i, j in enumerate(sources.tolist()):
        pool = pools[j]
        rows[i] = int(pool[int(torch.randint(len(pool), (1,), generator=generator))])
    return sources, rows


def source_pools(sources: Sequence[str], names: Sequence[str], *, what: str) -> list[list[int]]:
    """Row indices of each name in ``names``; every source must be a known name and every name must have rows.

    ``what`` names the data in error messages (e.g. "train_dataset column 'source'").
    """
    names = [str(n) for n in names]
    index = {n: j for j, n in enumerate(names)}
    unknown = sorted({str(s) for s in sources} - set(index))
    if unknown:
        raise ValueError(
            f"{what} holds sources {unknown[:10]} that the scheduler does not know (scheduler names: {names}); "
            "build the scheduler with every source name in the data."
        )
    pools: list[list[int]] = [[] for _ in names]
    for row, s in enumerate(sources):
        pools[index[str(s)]].append(row)
    empty = [n for n, pool in zip(names, pools) if not pool]
    if empty:
        raise ValueError(
            f"scheduler distributions {empty} have no rows in {what}; drop them from the scheduler or add rows with "
            "those sources."
        )
    return pools


def per_response_advantages(advantages: torch.Tensor, response_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scalar advantage of each response: the mean of its token advantages over response tokens.

    This is the DUMP authors' reduction (``advantages[i][response_mask[i]].mean()``,
    ``shared/notes/theory_core.md`` 1.3); under GRPO every response token carries
    the same value, so it is the sequence-level advantage.

    Shapes: ``advantages`` and ``response_mask`` [batch, time] -> (values [batch], valid [batch] bool).
    A response without tokens has no mean: ``valid`` is False there and its value is 0.
    """
    if advantages.ndim != 2 or advantages.shape != response_mask.shape:
        raise ValueError(
            f"advantages and response_mask must both have shape [batch, time]; got {tuple(advantages.shape)} "
            f"and {tuple(response_mask.shape)}."
        )
    mask = response_mask.to(torch.float64)
    counts = mask.sum(-1)
    valid = counts > 0
    sums = (advantages.to(torch.float64) * mask).sum(-1)
    values = torch.where(valid, sums / counts.clamp(min=1.0), torch.zeros_like(sums))
    if not torch.isfinite(values).all():
        rows = torch.nonzero(~torch.isfinite(values)).flatten()[:10].tolist()
        raise ValueError(f"advantages are non-finite in rows {rows}; the scheduler was not updated.")
    return values, valid

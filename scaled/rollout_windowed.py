"""Continuing partial responses for windowed (successive) generation, T-PPO's rollout.

:func:`continue_sequences` takes token contexts of different lengths (prompt
plus the response generated so far), re-encodes them in one left-padded
forward pass (the KV cache of the previous window is not kept: correctness
first, and a prefill pass costs about one decode step of wall-clock on these
sizes) and decodes up to each row's budget of new tokens over the KV cache,
drawing every token from softmax(logits / temperature) (top-p nucleus when
``top_p < 1``) with an explicit generator, as
:func:`polab.scaled.rollout.sample_rollouts` does. A row stops at its first
EOS (kept) or when its budget is spent.

Re-encoding is exact causal attention: the continuation's distribution is the
one a single uninterrupted decode would have (tested with near-greedy
sampling: windows of 2 tokens reproduce the one-window tokens exactly).
"""

from __future__ import annotations

import torch

from .rollout import _cache_kwarg, _cache_of, _top_p_filter, position_ids_from_mask

__all__ = ["continue_sequences"]


@torch.no_grad()
def continue_sequences(model, contexts: list[torch.Tensor], budgets: list[int], *, eos_token_id: int, pad_token_id: int,
                       generator: torch.Generator, temperature: float = 1.0, top_p: float = 1.0) -> list[list[int]]:
    """Sample up to ``budgets[i]`` new tokens after each context (stopping after EOS).

    Parameters
    ----------
    model : a causal LM (transformers)
    contexts : list of 1-D LongTensor
        Row ``i``'s tokens so far (prompt without padding, then its response).
    budgets : list of int >= 1
        Most new tokens per row.
    eos_token_id, pad_token_id : int
    generator : torch.Generator on the model's device
    temperature : float > 0
    top_p : float in (0, 1]

    Returns
    -------
    list of list of int: the new tokens of each row (EOS included when drawn).
    """
    if len(contexts) != len(budgets):
        raise ValueError(f"contexts ({len(contexts)}) and budgets ({len(budgets)}) need one entry per row.")
    if not contexts:
        return []
    if any(int(b) < 1 for b in budgets):
        raise ValueError(f"budgets must be >= 1 new token per row; got {list(budgets)}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling; got {temperature}.")
    device = next(model.parameters()).device
    if not isinstance(generator, torch.Generator) or generator.device.type != device.type:
        raise ValueError(f"generator must be a torch.Generator on the model's device ({device}).")
    n, L = len(contexts), max(len(c) for c in contexts)
    ids = torch.full((n, L), pad_token_id, dtype=torch.long, device=device)
    mask = torch.zeros((n, L), dtype=torch.long, device=device)
    for i, c in enumerate(contexts):  # left padding
        ids[i, L - len(c):] = c.to(device)
        mask[i, L - len(c):] = 1
    budget = torch.tensor([int(b) for b in budgets], device=device)
    was_training = model.training
    model.eval()
    out_tokens: list[list[int]] = [[] for _ in range(n)]
    try:
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True, logits_to_keep=1)
        cache_kw, cache = _cache_kwarg(model), _cache_of(out)
        logits = out.logits[:, -1, :].float()
        pos = mask.sum(dim=1, keepdim=True)
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        count = torch.zeros(n, dtype=torch.long, device=device)
        for t in range(int(budget.max())):
            probs = _top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            live = ~finished
            tok = torch.where(live, tok, torch.full_like(tok, pad_token_id))
            for i in live.nonzero().flatten().tolist():
                out_tokens[i].append(int(tok[i]))
            count = count + live.long()
            finished = finished | (tok == eos_token_id) | (count >= budget)
            if bool(finished.all()):
                break
            mask = torch.cat([mask, live.long()[:, None]], dim=1)
            step = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache})
            cache = _cache_of(step)
            logits = step.logits[:, -1, :].float()
            pos = pos + live.long()[:, None]
    finally:
        model.train(was_training)
    return out_tokens

"""Rollouts and per-token log-probabilities for group-sampled LLM training.

A rollout batch holds, for ``prompts x samples`` responses, the left-padded
prompt ids followed by the generated ids, with masks that mark the prompt
(attention) and the response tokens up to and including the first EOS.

Two samplers with the same output:

- :func:`sample_rollouts` (default): a decode loop over the model's KV cache
  that runs the prompt forward pass once per prompt and shares it among the
  prompt's ``G`` samples (``DynamicCache.batch_repeat_interleave``), drawing
  tokens with an explicit ``torch.Generator``;
- :func:`generate_rollouts`: transformers' ``generate`` (reads torch's global RNG).

For training, :class:`PrefixSharedLogprobs` computes the response tokens'
log-probabilities with the same prompt sharing (one prompt pass per group, the
response pass on the expanded cache, gradients through both), which is exact
causal attention and gives the same values as a full forward pass
(:func:`token_logprobs`) up to float round-off; tests check both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "continuation_texts",
    "RolloutBatch",
    "PrefixSharedLogprobs",
    "encode_prompts",
    "generate_rollouts",
    "sample_rollouts",
    "token_logprobs",
    "position_ids_from_mask",
]


@dataclass
class RolloutBatch:
    """Shapes: ``input_ids``, ``attention_mask`` [batch, P + T]; ``response_mask`` [batch, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int
    texts: list[str]
    truncated: torch.Tensor  # [batch] bool: no EOS within max_new_tokens
    #: [batch, T] the rollout engine's own log-probabilities of the sampled tokens (vLLM), for the truncated
    #: importance-sampling correction; None when the trainer's model sampled them
    rollout_logp: torch.Tensor | None = None
    #: [batch, T] log-probabilities of the sampled tokens recorded by polab's own sampler while it decoded
    #: (``sample_rollouts(logprob_temperature=...)``; 0 off the response mask); None unless asked for
    sample_logp: torch.Tensor | None = None


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over attended tokens only (as ``generate`` does with left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _cache_kwarg(model) -> str:
    """Name of the KV-cache argument: ``cache`` (transformers >= 5.2x) or ``past_key_values`` (older)."""
    import inspect

    fwd = getattr(model, "lm", model)
    params = inspect.signature(type(fwd).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def encode_prompts(tokenizer, prompts: list[str], *, system_prompt: str | None = None, device=None):
    """Chat-template and left-pad prompts; returns ``(input_ids, attention_mask)`` [prompts, P]."""
    texts = []
    for p in prompts:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": p}]
        texts.append(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def _finish_batch(tokenizer, prompt_ids, prompt_mask, resp) -> RolloutBatch:
    """Masks and texts from left-padded prompts [N, P] and generated ids [N, T]."""
    if resp.shape[1] == 0:
        resp = torch.full((prompt_ids.shape[0], 1), tokenizer.pad_token_id, dtype=prompt_ids.dtype, device=prompt_ids.device)
    is_eos = resp == tokenizer.eos_token_id
    # response tokens: everything up to and including the first EOS
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    resp = resp.masked_fill(response_mask == 0, tokenizer.pad_token_id)
    decoded = tokenizer.batch_decode(resp, skip_special_tokens=True)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, resp], dim=1),
        attention_mask=torch.cat([prompt_mask, response_mask], dim=1),
        response_mask=response_mask,
        prompt_length=prompt_ids.shape[1],
        texts=decoded,
        truncated=(~is_eos.any(dim=1)).cpu(),
    )


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (nucleus sampling); renormalise."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(dim=-1, descending=True)
    cum = sorted_p.cumsum(dim=-1)
    drop = (cum - sorted_p) >= top_p  # keep a token while the mass before it is < top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    out = torch.zeros_like(probs).scatter_(-1, idx, sorted_p)
    return out / out.sum(dim=-1, keepdim=True)


@torch.no_grad()
def sample_rollouts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_p: float = 1.0,
    system_prompt: str | None = None,
    logprob_temperature: float | None = None,
) -> RolloutBatch:
    """Sample ``samples_per_prompt`` responses per prompt, sharing each prompt's forward pass.

    The prompt batch [B, P] goes through the model once; its KV cache is
    repeated ``G`` times along the batch and the ``B*G`` responses are decoded
    token by token, each token drawn from softmax(logits / temperature)
    (restricted to the top-p nucleus when ``top_p < 1``) with ``generator``.
    Decoding stops when every response has produced EOS or after
    ``max_new_tokens``. Responses ``i*G ... (i+1)*G - 1`` answer prompt ``i``.

    ``generator`` must live on the model's device (a CPU generator for a CPU model).

    ``logprob_temperature`` (optional): also record, from the logits the decoder already has,
    log softmax(logits / logprob_temperature) at each sampled token, in ``sample_logp`` [batch, T]
    (0 off the response mask). It equals :func:`token_logprobs` of the finished batch at that
    temperature up to float32 summation order (the KV-cache path adds the same terms in another
    order; tested), and saves that second forward pass. It may differ from ``temperature``: a
    greedy rollout (tiny sampling temperature) still reports the policy's log-probabilities.
    """
    if samples_per_prompt < 1 or max_new_tokens < 1:
        raise ValueError("samples_per_prompt and max_new_tokens must be >= 1.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling; got {temperature}.")
    if logprob_temperature is not None and not logprob_temperature > 0:
        raise ValueError(f"logprob_temperature must be > 0 (or None: not recorded); got {logprob_temperature}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1]; got {top_p}.")
    device = next(model.parameters()).device
    if not isinstance(generator, torch.Generator) or generator.device.type != device.type:
        raise ValueError(f"generator must be a torch.Generator on the model's device ({device}).")
    G = samples_per_prompt
    p_ids, p_mask = encode_prompts(tokenizer, prompts, system_prompt=system_prompt, device=device)
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids_from_mask(p_mask), use_cache=True, logits_to_keep=1)
        cache_kw = _cache_kwarg(model)
        cache = _cache_of(out)
        cache.batch_repeat_interleave(G)
        logits = out.logits[:, -1, :].float().repeat_interleave(G, dim=0)
        mask = p_mask.repeat_interleave(G, dim=0)
        pos = mask.sum(dim=1, keepdim=True)  # next position of each sequence
        n = mask.shape[0]
        finished = torch.zeros(n, dtype=torch.bool, device=device)
        tokens, lps = [], []
        for _ in range(max_new_tokens):
            probs = _top_p_filter(torch.softmax(logits / temperature, dim=-1), top_p)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            tok = torch.where(finished, torch.full_like(tok, tokenizer.pad_token_id), tok)
            live = ~finished
            tokens.append(tok)
            if logprob_temperature is not None:  # live rows' token (EOS included); finished rows' pad -> 0
                lt = logits / logprob_temperature
                lp = lt.gather(1, tok[:, None]).squeeze(1) - torch.logsumexp(lt, dim=-1)
                lps.append(torch.where(live, lp, torch.zeros_like(lp)))
            finished = finished | (tok == tokenizer.eos_token_id)
            if bool(finished.all()) or len(tokens) == max_new_tokens:
                break
            mask = torch.cat([mask, live.long()[:, None]], dim=1)
            step = model(input_ids=tok[:, None], attention_mask=mask, position_ids=pos, use_cache=True, **{cache_kw: cache})
            cache = _cache_of(step)
            logits = step.logits[:, -1, :].float()
            pos = pos + live.long()[:, None]
    finally:
        model.train(was_training)
    resp = torch.stack(tokens, dim=1)
    batch = _finish_batch(tokenizer, p_ids.repeat_interleave(G, dim=0), p_mask.repeat_interleave(G, dim=0), resp)
    if logprob_temperature is not None:
        batch.sample_logp = torch.stack(lps, dim=1) * batch.response_mask.to(lps[0].dtype)
    return batch


class PrefixSharedLogprobs(torch.nn.Module):
    """Response-token log-probabilities with one prompt pass per group (a module, so DDP can wrap it).

    ``forward(input_ids, attention_mask, prompt_length, group_size, temperature)``
    takes a rollout batch whose rows come in groups of ``group_size``
    consecutive responses to the same prompt and returns [batch, T] like
    :func:`token_logprobs`. Gradients flow through the prompt pass and the
    response pass; every parameter takes part in one forward, so DDP sees one
    gradient per parameter.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self._cache_kw = _cache_kwarg(lm)

    def forward(self, input_ids, attention_mask, prompt_length: int, group_size: int, temperature: float = 1.0):
        G = int(group_size)
        n = input_ids.shape[0]
        if n % G:
            raise ValueError(f"batch of {n} rows is not made of whole groups of {G}.")
        p_ids = input_ids[::G, :prompt_length]
        p_mask = attention_mask[::G, :prompt_length]
        r_ids = input_ids[:, prompt_length:]
        out = self.lm(input_ids=p_ids, attention_mask=p_mask, position_ids=position_ids_from_mask(p_mask), use_cache=True, logits_to_keep=1)
        cache = _cache_of(out)
        cache.batch_repeat_interleave(G)
        first = out.logits[:, -1:, :].repeat_interleave(G, dim=0)
        start = p_mask.sum(dim=1, keepdim=True).repeat_interleave(G, dim=0)
        pos = start + torch.arange(r_ids.shape[1] - 1, device=input_ids.device)[None, :]
        if r_ids.shape[1] > 1:
            rest = self.lm(input_ids=r_ids[:, :-1], attention_mask=attention_mask[:, :-1], position_ids=pos,
                           use_cache=True, **{self._cache_kw: cache}).logits
            logits = torch.cat([first, rest], dim=1).float()
        else:
            logits = first.float()
        if temperature != 1.0:
            logits = logits / temperature
        picked = torch.gather(logits, 2, r_ids.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def generate_rollouts(
    model,
    tokenizer,
    prompts: list[str],
    *,
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    system_prompt: str | None = None,
) -> RolloutBatch:
    """Sample ``samples_per_prompt`` responses to each prompt (chat template applied).

    Randomness comes from torch's global RNG, which ``generate`` uses; the
    trainer sets it from (seed, step, rank) before each call so that every
    step is reproducible and a resumed run continues exactly.
    Responses ``i*samples_per_prompt ... (i+1)*samples_per_prompt - 1`` answer prompt ``i``.
    """
    if samples_per_prompt < 1 or max_new_tokens < 1:
        raise ValueError("samples_per_prompt and max_new_tokens must be >= 1.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling; got {temperature}.")
    device = next(model.parameters()).device
    p_ids, p_mask = encode_prompts(tokenizer, prompts, system_prompt=system_prompt, device=device)
    ids = p_ids.repeat_interleave(samples_per_prompt, dim=0)
    att = p_mask.repeat_interleave(samples_per_prompt, dim=0)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=ids,
            attention_mask=att,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    finally:
        model.train(was_training)
    return _finish_batch(tokenizer, ids, att, out[:, ids.shape[1]:])


@torch.no_grad()
def continuation_texts(
    model,
    tokenizer,
    batch: RolloutBatch,
    jobs: list[tuple[int, int]],
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> list[list[str]]:
    """Monte Carlo continuations of response prefixes, decoded: the rollouts behind step values (SPO, Direct Advantage PO).

    ``jobs`` holds ``(row, t)`` pairs: the prefix is row ``row``'s prompt plus
    its first ``t`` response tokens. Each prefix gets ``num_samples``
    continuations from transformers' ``generate`` (torch's global RNG: the
    caller seeds it), each cut to the ``max_new_tokens - t`` tokens left of the
    response budget, which samples exactly as a shorter budget would. Returns,
    per job, the decoded texts of response head + continuation (up to and
    including the first EOS).
    """
    if not jobs:
        return []
    P, pad, eos = batch.prompt_length, tokenizer.pad_token_id, tokenizer.eos_token_id
    prefixes, heads, budgets = [], [], []
    for i, t in jobs:
        p = batch.input_ids[i, :P][batch.attention_mask[i, :P].bool()]
        head = batch.input_ids[i, P:P + t]
        prefixes.append(torch.cat([p, head]))
        heads.append(head.cpu())
        budgets.append(max_new_tokens - t)
    L = max(len(x) for x in prefixes)
    ids = torch.full((len(jobs), L), pad, dtype=torch.long, device=batch.input_ids.device)
    att = torch.zeros_like(ids)
    for j, x in enumerate(prefixes):  # left padding, as for generation
        ids[j, L - len(x):] = x
        att[j, L - len(x):] = 1
    N = int(num_samples)
    was = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids.repeat_interleave(N, 0), attention_mask=att.repeat_interleave(N, 0), do_sample=True,
                             temperature=temperature, top_p=top_p, top_k=0, max_new_tokens=max(budgets),
                             pad_token_id=pad, eos_token_id=eos)
    finally:
        model.train(was)
    cont = out[:, L:].cpu()
    texts = []
    for j in range(len(jobs)):
        row = []
        for s in range(N):
            c = cont[j * N + s, :budgets[j]]
            hit = (c == eos).nonzero()
            if hit.numel():
                c = c[: int(hit[0]) + 1]
            row.append(tokenizer.decode(torch.cat([heads[j], c]), skip_special_tokens=True))
        texts.append(row)
    return texts


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, *, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities of the response tokens under ``model`` at ``temperature``.

    Returns a [batch, T] tensor for the tokens after ``prompt_length``
    (values on non-response tokens are meaningless; mask them).
    Computed as ``logit[token] - logsumexp(logits)`` to avoid materialising a
    full log-softmax over the vocabulary.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask), use_cache=False)
    logits = out.logits[:, prompt_length - 1 : -1, :].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, prompt_length:]
    picked = torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)

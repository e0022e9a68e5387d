"""Rollouts with transformers' ``generate`` and per-token log-probabilities.

A rollout batch holds, for ``prompts x samples`` responses, the left-padded
prompt ids followed by the generated ids, with masks that mark the prompt
(attention) and the response tokens up to and including the first EOS.
vLLM can replace :func:`generate_rollouts` on GPUs (``scaled.vllm_rollout``
where vllm is installed); the rest of the trainer does not change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RolloutBatch", "generate_rollouts", "token_logprobs", "position_ids_from_mask"]


@dataclass
class RolloutBatch:
    """Shapes: ``input_ids``, ``attention_mask`` [batch, P + T]; ``response_mask`` [batch, T]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_length: int
    texts: list[str]
    truncated: torch.Tensor  # [batch] bool: no EOS within max_new_tokens


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over attended tokens only (as ``generate`` does with left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


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
    texts = []
    for p in prompts:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": p}]
        texts.append(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    device = next(model.parameters()).device
    ids = enc["input_ids"].repeat_interleave(samples_per_prompt, dim=0).to(device)
    att = enc["attention_mask"].repeat_interleave(samples_per_prompt, dim=0).to(device)
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
    P = ids.shape[1]
    resp = out[:, P:]
    if resp.shape[1] == 0:
        resp = torch.full((out.shape[0], 1), tokenizer.pad_token_id, dtype=out.dtype, device=out.device)
        out = torch.cat([out, resp], dim=1)
    is_eos = resp == tokenizer.eos_token_id
    # response tokens: everything up to and including the first EOS
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    response_mask = (~after_eos).long()
    truncated = ~is_eos.any(dim=1)
    attention_mask = torch.cat([att, response_mask], dim=1)
    decoded = tokenizer.batch_decode(resp.masked_fill(response_mask == 0, tokenizer.pad_token_id), skip_special_tokens=True)
    return RolloutBatch(
        input_ids=out,
        attention_mask=attention_mask,
        response_mask=response_mask,
        prompt_length=P,
        texts=decoded,
        truncated=truncated.cpu(),
    )


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

r"""Self-reference AI feedback as a pair labeller (``pair_labels="self-reference"``).

Bao et al. (2024) let the annotator model **first answer the instruction
itself**, then **critique the other answers with its own answer as the
reference**, and finally decide which answer is better according to the
critique; position bias is reduced by self-consistency over the two orders and
the preference strength comes from semantic perplexity. This labeller does
those steps with the frozen **reference** model as the judge:

1. **self-answer**: for every prompt the judge samples ``num_self_answers``
   answers of at most ``self_answer_tokens`` tokens to ``answer_template``
   (default: the instruction itself), with a ``torch.Generator`` seeded from
   ``(seed, step)`` at ``judge_temperature``;
2. **critique**: for every within-prompt pair (A, B), in both orders and for
   every self-answer, the judge reads ``critique_template`` (the principle, the
   instruction, its own answer, the two candidates) and samples a critique of at
   most ``critique_tokens`` tokens (``0``: no generated critique, the verdict is
   read directly after the reference-conditioned prompt);
3. **verdict**: after the critique, the judge's per-token log-likelihoods of
   the paraphrases of "the first answer is better" and "the second answer is
   better" (:data:`~polab.scaled.methods.preference.JUDGE_VERDICTS`) give each
   verdict's semantic perplexity
   (:func:`~polab.estimators.reward_shaping.semantic_perplexity`, pooled over the
   paraphrases **and** over the self-answers), the first-listed probability
   :math:`p = \mathrm{PPL}_2/(\mathrm{PPL}_1+\mathrm{PPL}_2)` as in ``ai-feedback``,
   the two orders combined by :func:`~polab.estimators.reward_shaping.order_swap_debias`
   and the strength by :func:`~polab.estimators.reward_shaping.preference_strength`.

The judged winner and loser of each kept pair form a two-response group with
rewards :math:`(P(\text{win}), 1-P(\text{win}))`, consumed by the pairwise
scheme's core loss unchanged (as ``ai-feedback``, which stays the plain judge
without a self-answer or critique).

What is confirmed and what is reconstructed
-------------------------------------------
- Confirmed from the paper's abstract (arXiv 2406.11190): the order
  *answer itself -> critique the candidates against its own answer -> decide from
  the critique*, "a self-consistency method to reduce position bias", and
  "semantic perplexity to calculate the preference strength".
- The authors' repository (rbao2018/self_ref_feedback at 90edcf6) holds only
  reward-model and PPO training code (its margin loss is
  :func:`~polab.estimators.reward_shaping.margin_reward_model_loss`); the feedback
  generation, hence how self-consistency and the semantic-perplexity strength are
  formed, is **not** in it, and the paper body was not readable here. So these
  are polab's **reconstruction**: the prompt wording, the verdict paraphrases,
  self-consistency as the order-swap average of
  :func:`~polab.estimators.reward_shaping.order_swap_debias`, pooling the verdict
  negative log-likelihood over several self-answers (``num_self_answers > 1``,
  polab's extension; 1 by default), and the strength as the log-perplexity gap.
- The judge is the frozen reference (the paper uses a separate, larger chat
  model as annotator); give the trainer another ``model`` for a different judge
  only by extending this class.

Metrics: ``judge_pairs`` (pairs kept), ``judge_consistency`` (both orders prefer the same answer),
``judge_position_bias``, ``judge_strength`` (mean :math:`|s|`), ``judge_reward_agreement`` (how often the judged
winner is the one with the higher task reward, over pairs whose rewards differ) and ``judge_self_answer_reward``
(the task's mean reward of the judge's own answers: how good the reference it critiques against is).

State: none (the judge is frozen, every draw is seeded from ``(seed, step)``);
resumption is exact without a checkpoint entry.

References
----------
Bao, Zheng, Dou, Wang, Zhou, Wang, Zhang, Ding, Tao, "Aligning Large Language
Models from Self-Reference AI Feedback with one General Principle", arXiv
2406.11190, 2024.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass, field

import torch

from polab.estimators.reward_shaping import semantic_perplexity

from ..rollout import PrefixSharedLogprobs, sample_rollouts
from .preference import JUDGE_PRINCIPLE, JUDGE_VERDICTS, PAIR_LABELLERS, PairLabeller, labels_from_verdict_perplexities

__all__ = ["ANSWER_TEMPLATE", "CRITIQUE_TEMPLATE", "SelfReferenceLabels", "SelfReferenceOptions"]

#: The judge's own answer is its reply to this (fields: ``{instruction}``).
ANSWER_TEMPLATE = "{instruction}"
#: What the judge critiques (fields: ``{principle}``, ``{instruction}``, ``{reference}``, ``{first}``, ``{second}``).
CRITIQUE_TEMPLATE = ("{principle}\n\nInstruction: {instruction}\n\nYour own answer: {reference}\n\nAnswer A: {first}\n\n"
                     "Answer B: {second}\n\nUsing your own answer as the reference, critique Answer A and Answer B, "
                     "then say which answer is better, A or B.")
_ANSWER_FIELDS = {"instruction"}
_CRITIQUE_FIELDS = {"principle", "instruction", "reference", "first", "second"}


@dataclass
class SelfReferenceOptions:
    principle: str = field(default=JUDGE_PRINCIPLE, metadata={"help": "the judge's one general principle"})
    answer_template: str = field(default=ANSWER_TEMPLATE, metadata={"help": "what the judge answers itself (fields: {instruction})"})
    critique_template: str = field(default=CRITIQUE_TEMPLATE, metadata={
        "help": "the critique request (fields: {principle} {instruction} {reference} {first} {second}; the last three required)"})
    self_answer_tokens: int = field(default=32, metadata={"help": "token budget of the judge's own answer"})
    num_self_answers: int = field(default=1, metadata={"help": "own answers per prompt; verdict perplexities are pooled over them"})
    critique_tokens: int = field(default=32, metadata={"help": "token budget of each critique (0: read the verdict right after the prompt)"})
    judge_temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the self-answers and critiques (polab's choice)"})
    space: str = field(default="probability", metadata={"help": "order-swap average in probability or logit space", "choices": ("probability", "logit")})
    min_strength: float = field(default=0.0, metadata={"help": "drop pairs whose |preference strength| is below this"})


def _template_fields(template: str) -> set[str] | None:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError:
        return None


@PAIR_LABELLERS.register("self-reference")
class SelfReferenceLabels(PairLabeller):
    """Self-reference AI feedback: the reference answers itself, critiques each pair against its answer, then judges (both orders)."""

    Options = SelfReferenceOptions
    judges_samples = True
    metrics = ("judge_pairs", "judge_consistency", "judge_position_bias", "judge_strength", "judge_reward_agreement",
               "judge_self_answer_reward")

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        for name, allowed, required in (("answer_template", _ANSWER_FIELDS, {"instruction"}),
                                        ("critique_template", _CRITIQUE_FIELDS, {"reference", "first", "second"})):
            got = _template_fields(getattr(o, name))
            if got is None:
                errs.append(f"self-reference.{name} is not a valid format string (unbalanced braces); escape literal braces as {{{{ }}}}")
            elif got - allowed or required - got:
                errs.append(f"self-reference.{name} must use only the fields {sorted(allowed)} and include {sorted(required)}; "
                            f"got {sorted(got)}")
        for name in ("self_answer_tokens", "num_self_answers"):
            v = getattr(o, name)
            if not isinstance(v, int) or v < 1:
                errs.append(f"self-reference.{name} must be an integer >= 1, got {v!r}")
        if not isinstance(o.critique_tokens, int) or o.critique_tokens < 0:
            errs.append(f"self-reference.critique_tokens must be an integer >= 0, got {o.critique_tokens!r}")
        if not (isinstance(o.judge_temperature, (int, float)) and math.isfinite(o.judge_temperature) and o.judge_temperature > 0):
            errs.append(f"self-reference.judge_temperature must be a finite number > 0, got {o.judge_temperature!r}")
        if o.space not in ("probability", "logit"):
            errs.append(f"self-reference.space must be 'probability' or 'logit', got {o.space!r}")
        if not o.min_strength >= 0:
            errs.append(f"self-reference.min_strength must be >= 0, got {o.min_strength}")
        return errs

    def label(self, trainer, sample, logp, ref_logp):
        judged = self.judge_pairs(trainer, sample.prompts, sample.batch.texts, sample.rewards, step=sample.step, items=sample.items)
        metrics = judged.pop("metrics")
        idx = judged["rows"].to(trainer.device)
        return logp[idx], ref_logp[idx], judged["rewards"].to(trainer.device), judged["groups"], metrics, {"judge": judged}

    # -- the three stages ----------------------------------------------------------------------------------
    def self_answers(self, trainer, prompts: list[str], *, step: int) -> list[list[str]]:
        """The judge's own answers: ``num_self_answers`` per prompt (seeded from ``(seed, step)``)."""
        o = self.options
        gen = torch.Generator(device=trainer.device).manual_seed(trainer.seed_for(step, "self_reference_answer", rank=0))
        batch = sample_rollouts(trainer.ref, trainer.tokenizer, [o.answer_template.format(instruction=p) for p in prompts],
                                samples_per_prompt=o.num_self_answers, max_new_tokens=o.self_answer_tokens, generator=gen,
                                temperature=o.judge_temperature)
        k = o.num_self_answers
        return [batch.texts[i * k:(i + 1) * k] for i in range(len(prompts))]

    def critique_prompts(self, prompt: str, first: str, second: str, references: list[str]) -> list[str]:
        """The critique request for one ordered pair, one per self-answer."""
        o = self.options
        return [o.critique_template.format(principle=o.principle, instruction=prompt, reference=r, first=first, second=second)
                for r in references]

    def verdict_contexts(self, trainer, critique_prompts: list[str], *, step: int) -> tuple[list[str], list[str]]:
        """Chat-formatted judge contexts after which the verdict is read: the critique request, the assistant turn's
        start and (``critique_tokens > 0``) the judge's sampled critique and a newline. Returns (contexts, critiques)."""
        o, tok = self.options, trainer.tokenizer
        heads = [tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False)
                 for c in critique_prompts]
        if o.critique_tokens == 0:
            return heads, [""] * len(heads)
        gen = torch.Generator(device=trainer.device).manual_seed(trainer.seed_for(step, "self_reference_critique", rank=0))
        crit = sample_rollouts(trainer.ref, tok, critique_prompts, samples_per_prompt=1, max_new_tokens=o.critique_tokens,
                               generator=gen, temperature=o.judge_temperature).texts
        return [h + c.strip() + "\n" for h, c in zip(heads, crit)], crit

    def verdict_logprobs(self, trainer, contexts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of every verdict paraphrase after every context.

        Returns ``lp`` [len(contexts) * n_phrases, Tv] (row ``c * n_phrases + j``: phrase ``j`` of
        ``JUDGE_VERDICTS`` flattened, after context ``c``) and the phrase mask [same shape].
        """
        tok, dev = trainer.tokenizer, trainer.device
        phrases = [ph for group in JUDGE_VERDICTS for ph in group]
        nv = len(phrases)
        enc = tok(contexts, return_tensors="pt", padding=True, add_special_tokens=False)  # left padding (load_model)
        p_ids, p_mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        v_enc = [tok(ph, add_special_tokens=False)["input_ids"] for ph in phrases]
        Tv = max(len(x) for x in v_enc)
        v_ids = torch.full((nv, Tv), tok.pad_token_id, dtype=p_ids.dtype)
        v_mask = torch.zeros((nv, Tv), dtype=p_mask.dtype)
        for r, x in enumerate(v_enc):
            v_ids[r, :len(x)] = torch.tensor(x)
            v_mask[r, :len(x)] = 1
        n = len(contexts)
        v_ids, v_mask = v_ids.to(dev).repeat(n, 1), v_mask.to(dev).repeat(n, 1)
        ids = torch.cat([p_ids.repeat_interleave(nv, 0), v_ids], 1)
        att = torch.cat([p_mask.repeat_interleave(nv, 0), v_mask], 1)
        return PrefixSharedLogprobs(trainer.ref)(ids, att, p_ids.shape[1], nv), v_mask

    @torch.no_grad()
    def judge_pairs(self, trainer, prompts: list[str], texts: list[str], rewards: torch.Tensor, *, step: int, items=None) -> dict:
        """Label every within-prompt pair (groups of ``samples_per_prompt`` consecutive texts per prompt).

        Returns a dict: ``rows`` (winner, loser row indices, flattened), ``groups``, ``rewards`` (P(win), 1 - P(win)),
        ``pairs`` [K, 2] (A, B rows), ``self_answers`` (per prompt, a list of ``num_self_answers`` texts),
        ``critique_prompts``, ``contexts`` and ``critiques`` (one per (pair, order, self-answer), in that nesting order;
        order 0 lists A first), the judge's verdict log-probabilities ``verdict_logp`` [rows, Tv] and ``verdict_mask``,
        ``paraphrase_ids`` [rows] ((pair * 2 + order) * 2 + verdict), ``ppl`` [K, 2 orders, 2 verdicts] (verdict 0: the
        first-listed answer is better), ``p_first_ab``, ``p_first_ba`` [K], the core results ``prob_a``, ``strength``,
        ``consistent``, ``position_bias``, ``kept`` [K] bool, and ``metrics``.
        """
        o, G, dev = self.options, trainer.cfg.samples_per_prompt, trainer.device
        k = o.num_self_answers
        pairs = [(g * G + i, g * G + j) for g in range(len(prompts)) for i in range(G) for j in range(i + 1, G)]
        K = len(pairs)
        answers = self.self_answers(trainer, prompts, step=step)
        crit_prompts = []
        for a, b in pairs:
            for first, second in ((a, b), (b, a)):
                crit_prompts += self.critique_prompts(prompts[a // G], texts[first], texts[second], answers[a // G])
        contexts, critiques = self.verdict_contexts(trainer, crit_prompts, step=step)
        lp, v_mask = self.verdict_logprobs(trainer, contexts)
        nv = sum(len(g) for g in JUDGE_VERDICTS)
        verdict_of = [v for v, group in enumerate(JUDGE_VERDICTS) for _ in group]
        # row r: context c = r // nv = (pair * 2 + order) * k + answer; phrase r % nv -> pooled id (pair * 2 + order) * 2 + verdict
        para = torch.tensor([(r // nv // k) * 2 + verdict_of[r % nv] for r in range(lp.shape[0])], device=dev)
        ppl = semantic_perplexity(lp.double(), v_mask.double(), paraphrase_ids=para).view(K, 2, 2).cpu()
        out = labels_from_verdict_perplexities(ppl, pairs, rewards, space=o.space, min_strength=o.min_strength)
        self_reward = math.nan
        if items is not None and all(it is not None for it in items):
            self_reward = sum(trainer.reward_of(t, items[i]) for i, row in enumerate(answers) for t in row) / (len(items) * k)
        out["metrics"]["judge_self_answer_reward"] = float(self_reward)
        out.update(self_answers=answers, critique_prompts=crit_prompts, contexts=contexts, critiques=critiques,
                   verdict_logp=lp.detach().cpu(), verdict_mask=v_mask.cpu(), paraphrase_ids=para.cpu())
        return out

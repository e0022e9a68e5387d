r"""Rollout strategies of the GRPO trainer (registry :data:`ROLLOUT_STRATEGIES`, option ``rollout_strategy``).

Compute call: ``strategy.rollout(trainer, step) -> Rollout`` (the step's
samples, :class:`polab.scaled.trainers.grpo.Rollout`).

- ``full`` (default): each step draws ``prompts_per_step`` prompts and samples
  ``samples_per_prompt`` responses each to EOS or ``max_new_tokens``
  (:meth:`GRPOTrainer.full_rollout`);
- ``windowed``: T-PPO's successive generation (Fan et al. 2025). A pool of
  ``prompts_per_step`` groups is in flight. Each step generates at most
  ``window_tokens`` new tokens for every response that has not finished, then
  the trainer updates on what is there: responses that finished in this
  window (EOS, or ``max_new_tokens`` reached) fully, unfinished ones through
  the advantage's rule for unfinished rows (``t-ppo``: extended GAE, no score).
  The next step continues the unfinished responses from where they stopped
  (:func:`polab.scaled.rollout_windowed.continue_sequences`, which re-encodes
  prompt + response so far); a group leaves the pool once all its responses
  have finished, and new groups (curriculum draw, then task draw) fill the
  free slots. The batch keeps whole groups, so a response that finished in an
  earlier window while others of its group go on stays in the batch with no
  token in either loss (``batch.trained`` False).

  The batch it returns carries ``window_start`` ([n] long) and ``trained``
  ([n] bool) besides the usual fields; ``truncated`` marks the responses
  without EOS (the unfinished ones: still to be continued, or cut at
  ``max_new_tokens``, which T-PPO does not score either).

  The pool is plain data (sources, the step and index each problem was drawn
  with, the tokens so far), saved in checkpoints; problems are redrawn from
  their own seeds on resume, so a resumed run continues exactly.

  Limits: one process (``torchrun`` with more than one rank is refused); the
  curriculum receives the sequence advantages of every row of the batch each
  step (a response in flight for several windows is counted in each), so use
  ``--curriculum uniform`` where that matters; ``reward_mean``/``accuracy``
  are over the batch's rows, including partial responses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..rollout import RolloutBatch, encode_prompts
from ..rollout_windowed import continue_sequences
from .registry import Method, Registry

__all__ = ["FullRollout", "ROLLOUT_STRATEGIES", "RolloutStrategy", "WindowedBatch", "WindowedOptions", "WindowedRollout"]


class RolloutStrategy(Method):
    """Base of the rollout strategies: ``rollout(trainer, step) -> Rollout``."""

    def rollout(self, trainer, step: int):
        raise NotImplementedError


ROLLOUT_STRATEGIES = Registry("rollout strategy", "rollout_strategy", RolloutStrategy)


@ROLLOUT_STRATEGIES.register("full")
class FullRollout(RolloutStrategy):
    """Every response generated to EOS or max_new_tokens within its step (PPO/GRPO's rollout)."""

    def rollout(self, trainer, step: int):
        return trainer.full_rollout(step)


@dataclass
class WindowedBatch(RolloutBatch):
    """A :class:`RolloutBatch` with ``window_start`` [n] (first response token of this window) and ``trained`` [n] (row generated now)."""

    window_start: torch.Tensor | None = None
    trained: torch.Tensor | None = None


@dataclass
class WindowedOptions:
    window_tokens: int = field(default=16, metadata={"help": "new tokens per response per step (T-PPO's window length)"})


@ROLLOUT_STRATEGIES.register("windowed")
class WindowedRollout(RolloutStrategy):
    """T-PPO's successive generation: window_tokens per step, unfinished responses continue next step."""

    Options = WindowedOptions
    metrics = ("groups_started", "rows_finished_now", "window_tokens_generated")
    summed_metrics = ("groups_started", "rows_finished_now", "window_tokens_generated")

    def __init__(self, options=None):
        super().__init__(options)
        self.pool: list[dict] = []  # groups in flight: source, drawn=(step, k), tokens (G lists), done (G bools)
        self._problems: dict[tuple[int, int], object] = {}

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        w = o.window_tokens
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            errs.append(f"windowed.window_tokens must be an integer >= 1, got {w!r}")
        if config is None:
            return errs
        try:
            adv = config.method_class("advantage")
        except (AttributeError, ValueError):
            adv = None
        if adv is not None and not getattr(adv, "handles_windows", False):
            errs.append(f"rollout_strategy windowed needs an advantage estimator that trains on window tokens only (t-ppo); "
                        f"--advantage {adv.name} would retrain earlier windows' tokens and score unfinished responses")
        if getattr(config, "sample_filter", "none") != "none":
            errs.append("rollout_strategy windowed supports --sample-filter none only (a filter that swaps rows drops the window state)")
        if getattr(config, "rollout_engine", "shared-prefix") != "shared-prefix":
            errs.append("rollout_strategy windowed samples with its own KV-cache decoder; use --rollout-engine shared-prefix")
        return errs

    # -- checkpoint state: plain containers -------------------------------------------------------
    def state_dict(self) -> dict:
        return {"pool": [{"source": g["source"], "drawn": list(g["drawn"]), "tokens": [list(t) for t in g["tokens"]],
                          "done": list(g["done"])} for g in self.pool]}

    def load_state_dict(self, state: dict) -> None:
        self.pool = [{"source": int(g["source"]), "drawn": tuple(int(x) for x in g["drawn"]), "tokens": [list(map(int, t)) for t in g["tokens"]],
                      "done": [bool(x) for x in g["done"]]} for g in state.get("pool", [])]
        self._problems = {}

    # -- the step --------------------------------------------------------------------------------
    def _problem(self, trainer, source: int, drawn: tuple[int, int]):
        """The problem of a group, drawn from its own seed (so a resumed run redraws it exactly)."""
        from ..trainers.base import step_seed

        if drawn not in self._problems:
            rng = np.random.default_rng(step_seed(trainer.cfg.seed, drawn[0], drawn[1], "windowed-puzzle"))
            self._problems[drawn] = trainer.task.sample(trainer.sources[source], rng=rng)
        return self._problems[drawn]

    def rollout(self, trainer, step: int):
        from ..trainers.base import step_seed
        from ..trainers.grpo import Rollout

        cfg, tok = trainer.cfg, trainer.tokenizer
        if trainer.dist.world_size != 1:
            raise ValueError("rollout_strategy 'windowed' runs in one process; run without torchrun or use --rollout-strategy full.")
        G, W = cfg.samples_per_prompt, self.options.window_tokens
        # groups that finished in the previous window were trained then: retire them
        self.pool = [g for g in self.pool if not all(g["done"])]
        live_drawn = {g["drawn"] for g in self.pool}
        self._problems = {k: v for k, v in self._problems.items() if k in live_drawn}
        free = cfg.prompts_per_step - len(self.pool)
        if free > 0:
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, 0, "curriculum"))
            for k, j in enumerate(trainer.scheduler.sample(free, generator=gen).tolist()):
                self.pool.append({"source": int(j), "drawn": (step, k), "tokens": [[] for _ in range(G)], "done": [False] * G})
        problems = [self._problem(trainer, g["source"], g["drawn"]) for g in self.pool]
        prompts = [trainer.task.prompt(p) for p in problems]
        p_ids, p_mask = encode_prompts(tok, prompts, device=trainer.device)
        # contexts of the rows that go on: prompt (unpadded) + response so far
        rows, contexts, budgets = [], [], []
        before = []
        for gi, g in enumerate(self.pool):
            prompt = p_ids[gi][p_mask[gi].bool()]
            for r in range(G):
                before.append(len(g["tokens"][r]))
                if not g["done"][r]:
                    rows.append((gi, r))
                    contexts.append(torch.cat([prompt, torch.tensor(g["tokens"][r], dtype=torch.long, device=prompt.device)]))
                    budgets.append(min(W, cfg.max_new_tokens - len(g["tokens"][r])))
        gen = torch.Generator(device=trainer.device).manual_seed(trainer.seed_for(step, "generate"))
        new = continue_sequences(trainer.policy, contexts, budgets, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 generator=gen, temperature=cfg.temperature, top_p=cfg.top_p)
        finished_now = 0
        for (gi, r), t in zip(rows, new):
            g = self.pool[gi]
            g["tokens"][r].extend(t)
            if (t and t[-1] == tok.eos_token_id) or len(g["tokens"][r]) >= cfg.max_new_tokens:
                g["done"][r] = True
                finished_now += 1
        trained = torch.zeros(len(self.pool) * G, dtype=torch.bool)
        for gi, r in rows:
            trained[gi * G + r] = True
        batch = self._batch(tok, p_ids, p_mask, G, torch.tensor(before), trained)
        roll = Rollout(step=step, sources=[g["source"] for g in self.pool], problems=problems, prompts=prompts, batch=batch)
        roll.metrics.update(groups_started=float(max(free, 0)), rows_finished_now=float(finished_now),
                            window_tokens_generated=float(sum(len(t) for t in new)))
        return roll

    def _batch(self, tok, p_ids, p_mask, G: int, before: torch.Tensor, trained: torch.Tensor) -> WindowedBatch:
        """Left-padded prompts + right-padded responses so far of every row of the pool (as rollout._finish_batch lays them out)."""
        resp_rows = [t for g in self.pool for t in g["tokens"]]
        n, T = len(resp_rows), max(1, max(len(t) for t in resp_rows))
        dev = p_ids.device
        resp = torch.full((n, T), tok.pad_token_id, dtype=torch.long, device=dev)
        rmask = torch.zeros((n, T), dtype=torch.long, device=dev)
        for i, t in enumerate(resp_rows):
            if t:
                resp[i, :len(t)] = torch.tensor(t, dtype=torch.long, device=dev)
                rmask[i, :len(t)] = 1
        has_eos = torch.tensor([bool(t) and t[-1] == tok.eos_token_id for t in resp_rows])
        pi, pm = p_ids.repeat_interleave(G, dim=0), p_mask.repeat_interleave(G, dim=0)
        return WindowedBatch(input_ids=torch.cat([pi, resp], dim=1), attention_mask=torch.cat([pm, rmask], dim=1), response_mask=rmask,
                             prompt_length=p_ids.shape[1], texts=tok.batch_decode(resp, skip_special_tokens=True), truncated=~has_eos,
                             window_start=before.long(), trained=trained)

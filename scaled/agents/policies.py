r"""Agent policies: a small choice policy trained from scratch, and the language-model policy.

:class:`ChoicePolicy` (``--policy small``) reads the observation text as characters or words
(:class:`TextVocab`, a vocabulary built from the texts the environment produces), encodes it with a
2-4 layer Transformer (or a GRU), encodes each admissible action as the mean of its token
embeddings followed by an MLP, and scores action :math:`a` in observation :math:`o` by the
scaled dot product :math:`\ell(o, a) = \langle W h(o), g(a)\rangle / \sqrt d`; the policy is the
softmax of these scores over the admissible actions. One step is one decision, so its
log-probability has one "token" (``T = 1``) and the core losses apply unchanged.

:class:`LLMPolicy` (``--policy llm``) prompts a causal language model (SmolLM2 by default,
:mod:`polab.scaled.models`) with the objective, the last ``history_turns`` turns, the current
observation and the admissible actions, samples a reply for every environment in one batched
decode (:func:`polab.scaled.rollout.sample_rollouts`), and parses the action with the
environment's ``parse_action(reply, admissible)``; a reply that names no admissible action is sent
to the environment as it is and counts as an invalid action. Its log-probabilities are the reply's
token log-probabilities (``T`` = reply length).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .rollout import ActionSample, StepRecord, TurnContext

__all__ = ["ChoicePolicy", "LLMPolicy", "TextVocab", "default_parse_action"]

_WORD = re.compile(r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]|\n")


class TextVocab:
    """Character or word vocabulary that grows with the texts it encodes (up to ``max_size`` ids).

    Ids: 0 padding, 1 unknown (a new token once the vocabulary is full); others in order of first
    appearance, so the same sequence of texts always gives the same ids. Words are lower-cased
    letter runs, single digits, single punctuation marks and newlines.
    """

    PAD, UNK = 0, 1

    def __init__(self, mode: str = "char", max_size: int = 512):
        if mode not in ("char", "word"):
            raise ValueError(f"tokenizer must be 'char' or 'word'; got {mode!r}.")
        if max_size < 3:
            raise ValueError(f"max_vocab must be >= 3; got {max_size}.")
        self.mode, self.max_size = mode, int(max_size)
        self.ids: dict[str, int] = {}

    def tokens(self, text: str) -> list[str]:
        return list(text) if self.mode == "char" else [w.lower() for w in _WORD.findall(text)]

    def encode(self, text: str, *, grow: bool = True) -> list[int]:
        out = []
        for tok in self.tokens(text):
            i = self.ids.get(tok)
            if i is None:
                if grow and len(self.ids) + 2 < self.max_size:
                    i = self.ids[tok] = len(self.ids) + 2
                else:
                    i = self.UNK
            out.append(i)
        return out

    def positions(self, text: str) -> tuple[list[int], list[int]]:
        """Line and column of every token (a newline token ends its line): the grid coordinates of a text board."""
        rows, cols, r, c = [], [], 0, 0
        for tok in self.tokens(text):
            rows.append(r)
            cols.append(c)
            if tok == "\n":
                r, c = r + 1, 0
            else:
                c += 1
        return rows, cols

    def state_dict(self) -> dict:
        return {"mode": self.mode, "max_size": self.max_size, "tokens": list(self.ids)}

    def load_state_dict(self, state: dict) -> None:
        self.mode, self.max_size = state["mode"], int(state["max_size"])
        self.ids = {t: k + 2 for k, t in enumerate(state["tokens"])}


class ChoicePolicy(nn.Module):
    """Scores the admissible actions of a text observation (module docstring).

    Each observation token's input is its embedding plus a learned embedding of its position in
    the (last ``max_len`` tokens of the) text and of its line and column (so a text board's grid
    coordinates are explicit).

    Parameters
    ----------
    tokenizer : {"char", "word"}
    max_vocab : int
    d_model, layers, heads : int
        Width, depth (2-4 in the experiments) and attention heads of the observation encoder.
    max_len : int
        Observation tokens kept (the last ``max_len``).
    encoder : {"transformer", "gru"}
    view : {"observation", "anchor"}
        Which text of the turn the policy reads: the observation, or the environment's canonical
        state text (``info["anchor"]``, shorter when the observation repeats instructions).
    seed : int
        Initialisation seed (a local generator; the global RNG is untouched).
    """

    GRID = 64  # lines and columns with their own embedding (larger ones share the last)

    def __init__(self, *, tokenizer: str = "char", max_vocab: int = 512, d_model: int = 64, layers: int = 2, heads: int = 4,
                 max_len: int = 256, encoder: str = "transformer", view: str = "observation", seed: int = 0):
        super().__init__()
        if encoder not in ("transformer", "gru"):
            raise ValueError(f"encoder must be 'transformer' or 'gru'; got {encoder!r}.")
        if view not in ("observation", "anchor"):
            raise ValueError(f"view must be 'observation' or 'anchor'; got {view!r}.")
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads}).")
        self.hparams = dict(tokenizer=tokenizer, max_vocab=max_vocab, d_model=d_model, layers=layers, heads=heads, max_len=max_len,
                            encoder=encoder, view=view)
        self.vocab = TextVocab(tokenizer, max_vocab)
        self.max_len, self.encoder_kind, self.view = max_len, encoder, view
        # PyTorch's default initialisation (scales matter: tiny logits learn slowly), drawn from ``seed`` on a forked RNG
        # so the caller's global random state is left as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.embed = nn.Embedding(max_vocab, d_model, padding_idx=0)
            self.pos = nn.Embedding(max_len, d_model)
            # line and column of each token (a text board's grid coordinates), added to the 1-d position
            self.row_embed = nn.Embedding(self.GRID, d_model)
            self.col_embed = nn.Embedding(self.GRID, d_model)
            if encoder == "transformer":
                layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True, norm_first=True)
                self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            else:
                self.encoder = nn.GRU(d_model, d_model, num_layers=layers, batch_first=True)
            self.norm = nn.LayerNorm(d_model)
            # attention pooling: a learned query per head reads the encoded tokens (mean pooling loses where things are)
            self.pool_query = nn.Parameter(torch.zeros(1, 1, d_model))
            self.pool = nn.MultiheadAttention(d_model, heads, batch_first=True)
            self.query = nn.Linear(d_model, d_model)
            self.action_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.Tanh(), nn.Linear(d_model, d_model))

    # -- encoding ---------------------------------------------------------------------------------
    def _text(self, ctx: TurnContext) -> str:
        return ctx.anchor if self.view == "anchor" and ctx.anchor else ctx.observation

    def _pad(self, seqs: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [s[-max_len:] if s else [TextVocab.UNK] for s in seqs]
        L = max(len(s) for s in seqs)
        dev = self.embed.weight.device
        ids = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        return ids.to(dev), (ids > 0).to(dev)

    def encode_observations(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), d_model] (unique texts encoded once)."""
        uniq = list(dict.fromkeys(texts))
        ids, mask = self._pad([self.vocab.encode(t) for t in uniq], self.max_len)
        rc = [self.vocab.positions(t) for t in uniq]
        rows, _ = self._pad([[min(v, self.GRID - 1) + 1 for v in r] for r, _ in rc], self.max_len)
        cols, _ = self._pad([[min(v, self.GRID - 1) + 1 for v in c] for _, c in rc], self.max_len)
        x = (self.embed(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))[None]
             + self.row_embed((rows - 1).clamp_min(0)) + self.col_embed((cols - 1).clamp_min(0)))
        if self.encoder_kind == "transformer":
            x = self.encoder(x, src_key_padding_mask=~mask)
        else:
            x, _ = self.encoder(x)
        m = mask.to(x.dtype)[..., None]
        mean = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        att, _ = self.pool(self.pool_query.expand(x.shape[0], 1, -1) + mean[:, None], x, x, key_padding_mask=~mask, need_weights=False)
        h = self.norm(mean + att[:, 0])
        index = {t: k for k, t in enumerate(uniq)}
        return h[torch.tensor([index[t] for t in texts], device=h.device)]

    def encode_actions(self, actions: Sequence[str]) -> torch.Tensor:
        """[len(actions), d_model]: MLP of the mean token embedding (unique actions encoded once)."""
        uniq = list(dict.fromkeys(actions))
        ids, mask = self._pad([self.vocab.encode(a) for a in uniq], 64)
        e = self.embed(ids)
        m = mask.to(e.dtype)[..., None]
        g = self.action_mlp((e * m).sum(1) / m.sum(1).clamp_min(1.0))
        index = {a: k for k, a in enumerate(uniq)}
        return g[torch.tensor([index[a] for a in actions], device=g.device)]

    def logits(self, contexts: Sequence[TurnContext]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``[n, A_max]`` over each context's admissible actions and their mask (``-inf`` outside)."""
        for c in contexts:
            if not c.admissible:
                raise ValueError("a turn has no admissible actions: the choice policy needs info['admissible_actions'] to be non-empty.")
        h = self.query(self.encode_observations([self._text(c) for c in contexts]))
        uniq = list(dict.fromkeys(a for c in contexts for a in c.admissible))
        g = self.encode_actions(uniq)
        pos = {a: k for k, a in enumerate(uniq)}
        A = max(len(c.admissible) for c in contexts)
        n, d = len(contexts), h.shape[1]
        idx = torch.zeros((n, A), dtype=torch.long)
        mask = torch.zeros((n, A), dtype=torch.bool)
        for i, c in enumerate(contexts):
            idx[i, :len(c.admissible)] = torch.tensor([pos[a] for a in c.admissible])
            mask[i, :len(c.admissible)] = True
        idx, mask = idx.to(g.device), mask.to(g.device)
        G = g[idx]  # [n, A, d], one gather
        scores = torch.einsum("nd,nad->na", h, G) / math.sqrt(d)
        return scores.masked_fill(~mask, float("-inf")), mask

    # -- the policy protocol ------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, contexts: Sequence[TurnContext], *, generator: torch.Generator, greedy: bool = False) -> list[ActionSample]:
        logp = torch.log_softmax(self.logits(contexts)[0].float(), dim=-1)
        if greedy:
            idx = logp.argmax(-1)
        else:
            idx = torch.multinomial(logp.exp().cpu(), 1, generator=generator).squeeze(1)
        out = []
        for i, c in enumerate(contexts):
            j = int(idx[i])
            out.append(ActionSample(action=c.admissible[j], choice=j, logp=float(logp[i, j])))
        return out

    def log_probs(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probability of each step's chosen action ``[n, 1]``, its mask ``[n, 1]`` and the policy entropy ``[n]``."""
        scores, mask = self.logits([s.context for s in steps])
        logp_all = torch.log_softmax(scores, dim=-1)
        choice = torch.tensor([max(s.sample.choice, 0) for s in steps], device=scores.device)
        logp = logp_all.gather(1, choice[:, None])
        p = logp_all.exp()
        ent = -(p * logp_all.masked_fill(~mask, 0.0)).sum(-1)
        valid = torch.tensor([s.sample.choice >= 0 for s in steps], device=scores.device, dtype=logp.dtype)[:, None]
        return logp, valid, ent

    # -- checkpoints (a Hugging Face-style folder for polab.scaled.checkpoint) ---------------------
    def save_pretrained(self, folder) -> None:
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(self, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps({"polab_policy": "choice", **self.hparams, "vocab": self.vocab.state_dict()},
                                                       indent=1) + "\n")

    @property
    def name_or_path(self) -> str:
        return "polab-choice-policy"


def default_parse_action(reply: str, admissible: Sequence[str]) -> str | None:
    """The admissible action a reply names (case and surrounding punctuation ignored), else None.

    An exact match of the whole reply wins; otherwise the admissible action that occurs in the
    reply's last line, the longest first. Used when the environment module has no ``parse_action``.
    """
    text = reply.strip().lower()
    norm = {a.strip().lower(): a for a in admissible}
    clean = text.strip(" .!\"'`")
    if clean in norm:
        return norm[clean]
    last = text.splitlines()[-1] if text.splitlines() else ""
    for a in sorted(norm, key=len, reverse=True):
        if a and re.search(r"(?<![a-z0-9])" + re.escape(a) + r"(?![a-z0-9])", last):
            return norm[a]
    return None


class LLMPolicy:
    """A causal language model acting through text replies (module docstring).

    Parameters
    ----------
    model, tokenizer
        A Hugging Face causal LM and its tokenizer (left padding, pad token set: :func:`polab.scaled.models.load_model`).
    parse_action : callable (reply, admissible) -> str or None
    max_new_tokens : int
    temperature : float
    """

    SYSTEM = "You are an agent in a text game. Reply with exactly one of the admissible actions and nothing else."

    def __init__(self, model, tokenizer, *, parse_action: Callable[[str, Sequence[str]], str | None] = default_parse_action,
                 max_new_tokens: int = 16, temperature: float = 1.0):
        self.model, self.tokenizer = model, tokenizer
        self.parse_action, self.max_new_tokens, self.temperature = parse_action, int(max_new_tokens), float(temperature)

    def prompt(self, ctx: TurnContext) -> str:
        parts = []
        if ctx.objective:
            parts.append(f"Objective: {ctx.objective}")
        for k, (o, a) in enumerate(ctx.history):
            parts.append(f"Earlier observation {k + 1}:\n{o}\nYour action: {a}")
        parts.append(f"Current observation:\n{ctx.observation}")
        parts.append("Admissible actions: " + ", ".join(ctx.admissible))
        parts.append("Your action:")
        return "\n\n".join(parts)

    def act(self, contexts: Sequence[TurnContext], *, generator: torch.Generator, greedy: bool = False) -> list[ActionSample]:
        from ..rollout import sample_rollouts

        prompts = [self.prompt(c) for c in contexts]
        temp = 1e-4 if greedy else self.temperature
        # the reply's log-probability at the policy's temperature comes from the sampler's own logits (no second forward
        # pass over prompt + reply: that pass was half of the agent rollout's time); the update recomputes it with gradients
        batch = sample_rollouts(self.model, self.tokenizer, prompts, samples_per_prompt=1, max_new_tokens=self.max_new_tokens,
                                generator=generator, temperature=temp, system_prompt=self.SYSTEM, logprob_temperature=self.temperature)
        lp = batch.sample_logp
        out = []
        P = batch.prompt_length
        for i, c in enumerate(contexts):
            rm = batch.response_mask[i].bool()
            reply = batch.texts[i]
            act = self.parse_action(reply, c.admissible)
            choice = c.admissible.index(act) if act is not None and act in c.admissible else -1
            prompt_ids = batch.input_ids[i, :P][batch.attention_mask[i, :P].bool()].cpu()
            reply_ids = batch.input_ids[i, P:][rm].cpu()
            out.append(ActionSample(action=act if act is not None else reply, choice=choice, logp=float((lp[i] * rm).sum()),
                                    extra={"prompt_ids": prompt_ids, "reply_ids": reply_ids, "reply": reply}))
        return out

    def log_probs(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reply-token log-probabilities ``[n, T]``, the reply mask ``[n, T]`` and a zero entropy placeholder ``[n]``.

        Every reply is a training sample, invalid ones included (they earn what the environment gives an invalid action).
        """
        from ..rollout import token_logprobs

        dev = next(self.model.parameters()).device
        P = max(len(s.sample.extra["prompt_ids"]) for s in steps)
        T = max(1, max(len(s.sample.extra["reply_ids"]) for s in steps))
        n = len(steps)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((n, P + T), pad, dtype=torch.long)
        att = torch.zeros((n, P + T), dtype=torch.long)
        for i, s in enumerate(steps):
            p, y = s.sample.extra["prompt_ids"], s.sample.extra["reply_ids"]
            ids[i, P - len(p):P] = p
            att[i, P - len(p):P] = 1
            ids[i, P:P + len(y)] = y
            att[i, P:P + len(y)] = 1
        ids, att = ids.to(dev), att.to(dev)
        logp = token_logprobs(self.model, ids, att, P, temperature=self.temperature)
        mask = att[:, P:].to(logp.dtype)
        return logp, mask, torch.zeros(n, dtype=logp.dtype, device=dev)


class ChoiceCritic(nn.Module):
    """State-value critic for the choice policy: its own observation encoder (same architecture and vocabulary) and a linear head.

    ``forward(steps) -> [n]`` values of each step's observation.
    """

    def __init__(self, policy: ChoicePolicy, *, seed: int = 0):
        super().__init__()
        hp = dict(policy.hparams)
        self.encoder = ChoicePolicy(**hp, seed=seed)
        self.encoder.vocab = policy.vocab  # one vocabulary: the same ids for the same tokens
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 1)
            self.head = nn.Linear(hp["d_model"], 1)

    def forward(self, steps: Sequence[StepRecord]) -> torch.Tensor:
        h = self.encoder.encode_observations([self.encoder._text(s.context) for s in steps])
        return self.head(h).squeeze(-1)

r"""A small policy that generates each action token by token, and its token-level critic (POAD/BAD at CPU scale).

:class:`TokenActionPolicy` (``--policy tokens`` of ``polab train agent``) reads the observation with
the small policy's encoder (:class:`polab.scaled.agents.policies.ChoicePolicy`: a 2-4 layer
Transformer or a GRU over characters or words) and then *writes* the action: a GRU decoder over a
small action vocabulary emits one word per step until an end token (``<eos>``) or
``max_action_tokens`` tokens. The action vocabulary is the set of whitespace-separated words of
the admissible actions the environment has shown (grown in order of first appearance, like the
observation vocabulary), so ``"propose books=2 hats=0 balls=3"`` is four words plus ``<eos>``:
five tokens, each with its own log-probability :math:`\log\pi(w^j\mid o, w^{<j})`. The trainer's
PPO update sees ``[steps, T]`` token log-probabilities, as for a language model.

Decoding constraint (``constraint``):

- ``"admissible"`` (default): prefix-constrained decoding over the admissible actions (a token is
  allowed when some admissible action continues the prefix with it), the small-model stand-in for
  a pretrained language model's knowledge of the action syntax (a randomly initialised generator
  almost never writes a valid 4-word proposal, and an invalid action earns no signal toward a
  valid one). Every generated action is admissible, but it is still *chosen* token by token, so
  the credit of each token is what POAD/BAD is about. Tokens with a single continuation (``<eos>``
  after the last number) have log-probability 0 and carry no gradient.
- ``"none"``: any word of the vocabulary at any position; the words are joined with spaces and
  parsed with the environment's :func:`polab.scaled.envs.text_protocol.parse_action`; a reply
  that names no admissible action goes to the environment as it is and is an invalid action (the
  protocol's documented no-op), recorded with ``choice = -1`` and still trained on.

:class:`TokenCritic` has the same encoder and decoder (its own weights, the policy's vocabularies)
and a linear value head on the decoder state *before* each token, so ``values[:, j]`` is
:math:`V(o, w^{<j})` and ``values[:, 0]`` is the action-level :math:`V(o)`. POAD's credit
(``--method bad``) backs values up through every token (:func:`polab.estimators.action_decomposition.bad_gae`);
action-level PPO (``--method ppo-action``) reads ``values[:, 0]`` only.

References
----------
Wen et al., "Reinforcing Language Agents via Policy Optimization with Action Decomposition",
NeurIPS 2024 (POAD: a token-level critic over the tokens of each action). The authors' ADRL code
(morning9393/ADRL) uses an LLM with LoRA adapters for actor and critic; the small generator here is
ours.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .policies import ChoicePolicy, TextVocab
from .rollout import ActionSample, StepRecord, TurnContext

__all__ = ["ActionWords", "TokenActionPolicy", "TokenCritic", "build_token_policy", "CONSTRAINTS"]

CONSTRAINTS = ("admissible", "none")


class ActionWords:
    """The action vocabulary: whitespace-separated words of admissible actions. Ids: 0 padding, 1 ``<eos>``, then words."""

    PAD, EOS = 0, 1

    def __init__(self, max_size: int = 128):
        if max_size < 3:
            raise ValueError(f"the action vocabulary needs max_size >= 3; got {max_size}.")
        self.max_size = int(max_size)
        self.words: list[str] = []
        self.ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.words) + 2

    def add(self, action: str) -> None:
        for w in str(action).split():
            if w not in self.ids:
                if len(self.words) + 2 >= self.max_size:
                    raise ValueError(f"the action vocabulary is full ({self.max_size} ids): raise max_vocab.")
                self.ids[w] = len(self.words) + 2
                self.words.append(w)

    def encode(self, action: str) -> list[int] | None:
        """Word ids of an action (no ``<eos>``), or None when a word is unknown."""
        out = []
        for w in str(action).split():
            if w not in self.ids:
                return None
            out.append(self.ids[w])
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self.words[i - 2] for i in ids if i >= 2)


class _PolicyVocab(TextVocab):
    """The observation vocabulary plus the action words (one object in checkpoints)."""

    def __init__(self, mode: str, max_size: int):
        super().__init__(mode, max_size)
        self.actions = ActionWords(max_size)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "action_words": list(self.actions.words)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.actions = ActionWords(int(state["max_size"]))
        for w in state.get("action_words", []):
            self.actions.add(w)


class TokenActionPolicy(ChoicePolicy):
    """Observation encoder + autoregressive action-word decoder (module docstring).

    Parameters
    ----------
    max_action_tokens : int >= 2
        Tokens per action at most (``<eos>`` included).
    constraint : {"admissible", "none"}
    **kwargs
        The :class:`ChoicePolicy` options (tokenizer, max_vocab, d_model, layers, heads, max_len, encoder, view, seed).
    """

    def __init__(self, *, max_action_tokens: int = 8, constraint: str = "admissible", **kwargs):
        super().__init__(**kwargs)
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {CONSTRAINTS}; got {constraint!r}.")
        if int(max_action_tokens) < 2:
            raise ValueError(f"max_action_tokens must be >= 2 (a word and <eos>); got {max_action_tokens}.")
        self.hparams.update(max_action_tokens=int(max_action_tokens), constraint=constraint)
        self.max_action_tokens, self.constraint = int(max_action_tokens), constraint
        self.vocab = _PolicyVocab(self.hparams["tokenizer"], self.hparams["max_vocab"])
        d, V = self.hparams["d_model"], self.hparams["max_vocab"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(kwargs.get("seed", 0)) + 104729)
            self.bos = nn.Parameter(torch.randn(d) * 0.1)
            self.word_embed = nn.Embedding(V, d, padding_idx=0)
            self.init_state = nn.Linear(d, d)
            self.cell = nn.GRUCell(d, d)
            self.word_out = nn.Linear(d, V)

    # -- decoding pieces --------------------------------------------------------------------------
    @property
    def words(self) -> ActionWords:
        return self.vocab.actions

    def _candidates(self, ctx: TurnContext) -> list[list[int]]:
        """Token sequences of the admissible actions (``<eos>`` appended, cut at ``max_action_tokens``)."""
        out = []
        for a in ctx.admissible:
            ids = self.words.encode(a)
            if ids is not None:
                out.append((ids + [ActionWords.EOS])[:self.max_action_tokens])
        return out

    def _allowed(self, cands: list[list[int]] | None, prefix: list[int], j: int, device) -> torch.Tensor:
        """Bool ``[V]``: the tokens allowed after ``prefix`` (position ``j``)."""
        V = self.hparams["max_vocab"]
        m = torch.zeros(V, dtype=torch.bool)
        if self.constraint == "none" or cands is None:
            m[1:len(self.words)] = True
        else:
            nxt = {c[j] for c in cands if len(c) > j and c[:j] == prefix}
            if not nxt:  # cannot happen for a prefix the constrained decoder wrote; a recorded off-trie action falls back to "none"
                m[1:len(self.words)] = True
            else:
                m[list(nxt)] = True
        return m.to(device)

    def _start(self, contexts: Sequence[TurnContext]) -> torch.Tensor:
        return torch.tanh(self.init_state(self.encode_observations([self._text(c) for c in contexts])))

    def decoder_states(self, contexts: Sequence[TurnContext], tokens: torch.Tensor) -> torch.Tensor:
        """States before each token, ``[n, T, d]``: state ``j`` has read the observation and tokens ``< j`` (teacher forcing)."""
        s = self._start(contexts)
        n, T = tokens.shape
        x = self.bos[None].expand(n, -1)
        out = []
        for j in range(T):
            s = self.cell(x, s)
            out.append(s)
            x = self.word_embed(tokens[:, j])
        return torch.stack(out, 1)

    # -- the policy protocol ------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, contexts: Sequence[TurnContext], *, generator: torch.Generator, greedy: bool = False) -> list[ActionSample]:
        from ..envs.text_protocol import parse_action

        for c in contexts:
            for a in c.admissible:
                self.words.add(a)
        dev = self.word_out.weight.device
        n = len(contexts)
        cands = [self._candidates(c) for c in contexts]
        s = self._start(contexts)
        x = self.bos[None].expand(n, -1)
        toks: list[list[int]] = [[] for _ in range(n)]
        logps = [0.0] * n
        done = [False] * n
        for j in range(self.max_action_tokens):
            s = self.cell(x, s)
            logits = self.word_out(s).float()
            allowed = torch.stack([self._allowed(cands[i], toks[i], j, dev) for i in range(n)])
            lp = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
            if greedy:
                pick = lp.argmax(-1).cpu()
            else:
                pick = torch.multinomial(lp.exp().cpu(), 1, generator=generator).squeeze(1)
            for i in range(n):
                if not done[i]:
                    w = int(pick[i])
                    toks[i].append(w)
                    logps[i] += float(lp[i, w])
                    done[i] = w == ActionWords.EOS
            if all(done):
                break
            x = self.word_embed(pick.to(dev))
        out = []
        for i, c in enumerate(contexts):
            text = self.words.decode(toks[i])
            act = parse_action(text, list(c.admissible))
            choice = list(c.admissible).index(act) if act is not None and act in c.admissible else -1
            out.append(ActionSample(action=act if act is not None else text, choice=choice, logp=logps[i],
                                    extra={"action_ids": torch.tensor(toks[i], dtype=torch.long), "reply": text}))
        return out

    def _tokens(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.word_out.weight.device
        lens = [len(s.sample.extra["action_ids"]) for s in steps]
        T = max(1, max(lens))
        ids = torch.zeros((len(steps), T), dtype=torch.long)
        mask = torch.zeros((len(steps), T))
        for i, s in enumerate(steps):
            ids[i, :lens[i]] = s.sample.extra["action_ids"]
            mask[i, :lens[i]] = 1.0
        return ids.to(dev), mask.to(dev)

    def log_probs(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token log-probabilities ``[n, T]``, the token mask ``[n, T]`` and the mean per-token entropy ``[n]``."""
        ids, mask = self._tokens(steps)
        ctxs = [s.context for s in steps]
        states = self.decoder_states(ctxs, ids)
        logits = self.word_out(states)
        n, T = ids.shape
        allowed = torch.zeros((n, T, logits.shape[-1]), dtype=torch.bool, device=logits.device)
        for i, c in enumerate(ctxs):
            cands = self._candidates(c)
            seq = ids[i].tolist()
            L = int(mask[i].sum())
            for j in range(T):
                allowed[i, j] = self._allowed(cands, seq[:j], j, logits.device) if j < L else True
        lp_all = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        logp = lp_all.gather(2, ids[..., None]).squeeze(-1) * mask
        p = lp_all.exp()
        ent_tok = -(p * lp_all.masked_fill(~allowed, 0.0)).sum(-1)
        ent = (ent_tok * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return logp, mask, ent

    def make_token_critic(self, *, seed: int) -> "TokenCritic":
        return TokenCritic(self, seed=seed)

    def save_pretrained(self, folder) -> None:
        super().save_pretrained(folder)
        import json
        from pathlib import Path

        p = Path(folder) / "config.json"
        cfg = json.loads(p.read_text())
        cfg["polab_policy"] = "tokens"
        p.write_text(json.dumps(cfg, indent=1) + "\n")

    @property
    def name_or_path(self) -> str:
        return "polab-token-policy"


class TokenCritic(nn.Module):
    """Token-level critic of a :class:`TokenActionPolicy`: its own encoder/decoder and a value head per token state.

    ``forward(steps) -> (values [n, T], mask [n, T])`` with ``values[:, j]`` = :math:`V(o, w^{<j})`
    (``values[:, 0]`` is the observation's value, the action-level critic).
    """

    def __init__(self, policy: TokenActionPolicy, *, seed: int = 0):
        super().__init__()
        hp = dict(policy.hparams)
        self.net = TokenActionPolicy(**hp, seed=seed)
        self.net.vocab = policy.vocab  # the same ids for the same words
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + 1)
            self.head = nn.Linear(hp["d_model"], 1)

    def forward(self, steps: Sequence[StepRecord]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.net._tokens(steps)
        states = self.net.decoder_states([s.context for s in steps], ids)
        return self.head(states).squeeze(-1) * mask, mask


def build_token_policy(cfg, device) -> TokenActionPolicy:
    """``--policy tokens``: the token generator over the small policy's options of an :class:`~polab.scaled.trainers.agent.AgentConfig`."""
    from ..trainers.base import step_seed

    return TokenActionPolicy(tokenizer=cfg.tokenizer, max_vocab=cfg.max_vocab, d_model=cfg.d_model, layers=cfg.layers, heads=cfg.heads,
                             max_len=cfg.max_len, encoder=cfg.encoder, view=cfg.view, max_action_tokens=getattr(cfg, "action_tokens", 8),
                             constraint=getattr(cfg, "action_constraint", "admissible"),
                             seed=step_seed(cfg.seed, 0, 0, "policy-init")).to(device)

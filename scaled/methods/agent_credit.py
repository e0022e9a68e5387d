r"""Credit assignment of the agent trainer (registry :data:`AGENT_CREDIT`, option ``method``) and its sample filters
(registry :data:`AGENT_FILTERS`, option ``sample_filter``).

Compute call: ``method.compute(trainer, batch) -> CreditResult``, where ``batch`` is a
:class:`polab.scaled.agents.rollout.AgentBatch` (episodes of ``group_size`` trajectories per task,
flattened into step rows in trajectory-major, time order). The result holds one advantage per
step row (``[steps]``), given to every token of that step's action by the trainer. Each method
calls the verified core unchanged:

- ``grpo``: trajectory-level GRPO; the episode return :math:`R(\tau)` (sum of the step rewards)
  normalised within its episode group by
  :func:`polab.estimators.advantages.group_advantages` (one value per trajectory), the same for
  every step of the trajectory;
- ``rloo``: the same with the leave-one-out baseline
  (:func:`polab.estimators.advantages.rloo_advantages`);
- ``gigpo``: GiGPO (Feng et al. 2025): episode-level plus step-level advantages over anchor-state
  groups, :func:`polab.estimators.gigpo.gigpo_advantages`, with the step groups from
  :func:`~polab.estimators.gigpo.anchor_groups` (identical anchors, ``grouping="exact"``) or
  :func:`~polab.estimators.gigpo.similarity_anchor_groups` (``grouping="similarity"``);
- ``bad``: POAD's token-level GAE over the BAD backup (:func:`polab.estimators.action_decomposition.bad_gae`)
  with a token-level critic; for a policy whose action is one decision (the choice policy) each
  action is one token and BAD-GAE is action-level GAE; for the token policy (``--policy tokens``,
  :mod:`polab.scaled.agents.token_policy`) the critic values every token state
  :math:`V(o, w^{<j})` and each token gets its own advantage;
- ``ppo-action``: action-level PPO, the baseline POAD is compared with: one critic value per
  action (:math:`V(o)`, the token critic's first position), action-level GAE
  (:func:`polab.estimators.gae.generalized_advantage_estimation`) and the action's advantage given
  to every token of the action. On the choice policy it equals ``bad`` (one token per action).

Sample filters (``before_advantage(trainer, batch) -> metrics`` may replace whole trajectories):

- ``none``;
- ``arpo``: ARPO's per-task replay (:class:`polab.estimators.sample_filters.ARPOReplayBuffer`,
  unchanged): a group whose trajectories all failed gets one buffered successful trajectory of
  the same task in place of one of its own, then this batch's successes are buffered. Its task
  selection (``select_tasks``): keep the training tasks on which the initial policy succeeds at
  least once in ``selection_episodes`` tries (the paper kept the tasks its base model could solve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from polab.estimators.advantages import group_advantages, rloo_advantages
from polab.estimators.gigpo import GIGPO_CONVENTIONS, anchor_groups, gigpo_advantages, similarity_anchor_groups
from polab.estimators.sample_filters import ARPOReplayBuffer

from .registry import Method, Registry

__all__ = ["AGENT_CREDIT", "AGENT_FILTERS", "AgentSampleFilter", "CreditAssigner", "CreditResult", "from_token_layout", "token_layout"]


@dataclass
class CreditResult:
    """What a credit-assignment method returns.

    Attributes
    ----------
    advantages : Tensor [steps]
        One advantage per step row (float64, CPU).
    token : Tensor [steps, T], optional
        Token-level advantages where the method has them (``bad``); then ``advantages`` is their first token.
    metrics : dict
    loss_inputs : dict
    """

    advantages: torch.Tensor
    token: torch.Tensor | None = None
    metrics: dict = field(default_factory=dict)
    loss_inputs: dict = field(default_factory=dict)


class CreditAssigner(Method):
    """Base of the agent credit-assignment methods (see the module docstring)."""

    def setup(self, trainer) -> None:
        return None

    def compute(self, trainer, batch) -> CreditResult:
        raise NotImplementedError

    def after_update(self, trainer, batch, result: CreditResult) -> dict:
        return {}


AGENT_CREDIT = Registry("agent credit assignment", "method", CreditAssigner)


def _per_trajectory_to_rows(batch, values: torch.Tensor) -> torch.Tensor:
    return values[batch.row_episode()]


@dataclass
class GRPOCreditOptions:
    scale: str = field(default="group", metadata={"help": "group std scaling (GRPO) or none (Dr.GRPO)", "choices": ("group", "none")})
    convention: str = field(default="verl", metadata={"help": "std convention (epsilon) of the group advantages", "choices": ("verl", "trl", "openrlhf")})


@AGENT_CREDIT.register("grpo")
class GRPOCredit(CreditAssigner):
    """Trajectory-level GRPO: episode return normalised in its task group, on every step."""

    Options = GRPOCreditOptions
    metrics = ("zero_variance_groups",)
    summed_metrics = ("zero_variance_groups",)

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if o.scale not in ("group", "none"):
            errs.append(f"grpo.scale must be 'group' or 'none', got {o.scale!r}")
        if o.convention not in ("verl", "trl", "openrlhf"):
            errs.append(f"grpo.convention must be verl, trl or openrlhf, got {o.convention!r}")
        return errs

    def compute(self, trainer, batch) -> CreditResult:
        res = group_advantages(batch.trajectory_returns(), batch.trajectory_groups(), scale=self.options.scale,
                               convention=self.options.convention)
        return CreditResult(advantages=_per_trajectory_to_rows(batch, res.advantages),
                            metrics={"zero_variance_groups": float(res.num_zero_variance_groups)})


@AGENT_CREDIT.register("rloo")
class RLOOCredit(CreditAssigner):
    """REINFORCE leave-one-out on episode returns, on every step."""

    metrics = ("zero_variance_groups",)
    summed_metrics = ("zero_variance_groups",)

    def compute(self, trainer, batch) -> CreditResult:
        res = rloo_advantages(batch.trajectory_returns(), batch.trajectory_groups())
        return CreditResult(advantages=_per_trajectory_to_rows(batch, res.advantages),
                            metrics={"zero_variance_groups": float(res.num_zero_variance_groups)})


@dataclass
class GiGPOOptions:
    gamma: float = field(default=0.95, metadata={"help": "discount of the step returns (GiGPO eq. 5)"})
    omega: float = field(default=1.0, metadata={"help": "weight of the step-level advantage (eq. 8)"})
    convention: str = field(default="paper", metadata={"help": "paper (std-normalised, one statistic per trajectory) or verl-agent "
                                                                "(mean_norm over step rows)", "choices": tuple(GIGPO_CONVENTIONS)})
    grouping: str = field(default="exact", metadata={"help": "step groups by identical anchors or by text similarity",
                                                      "choices": ("exact", "similarity")})
    similarity_threshold: float = field(default=0.9, metadata={"help": "grouping=similarity: difflib ratio >= this joins a cluster"})


@AGENT_CREDIT.register("gigpo")
class GiGPOCredit(CreditAssigner):
    """GiGPO: episode-level + anchor-state step-level group advantages (no critic)."""

    Options = GiGPOOptions
    metrics = ("step_groups", "singleton_step_group_fraction", "mean_step_group_size", "step_advantage_abs", "episode_advantage_abs")

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if not 0.0 <= o.gamma <= 1.0:
            errs.append(f"gigpo.gamma must lie in [0, 1], got {o.gamma}")
        if o.omega < 0:
            errs.append(f"gigpo.omega must be >= 0, got {o.omega}")
        if o.convention not in GIGPO_CONVENTIONS:
            errs.append(f"gigpo.convention must be one of {sorted(GIGPO_CONVENTIONS)}, got {o.convention!r}")
        if o.grouping not in ("exact", "similarity"):
            errs.append(f"gigpo.grouping must be 'exact' or 'similarity', got {o.grouping!r}")
        if o.grouping == "similarity" and not 0.0 < o.similarity_threshold < 1.0:
            errs.append(f"gigpo.similarity_threshold must lie in (0, 1) (1 is grouping=exact), got {o.similarity_threshold}")
        return errs

    def step_groups(self, batch) -> torch.Tensor:
        eg = batch.episode_group_ids()
        anchors = batch.anchors()
        if self.options.grouping == "exact":
            return anchor_groups(anchors, eg)
        return similarity_anchor_groups([str(a) for a in anchors], eg, threshold=self.options.similarity_threshold)

    def compute(self, trainer, batch) -> CreditResult:
        o = self.options
        sg = self.step_groups(batch)
        res = gigpo_advantages(batch.step_rewards(), batch.episode_group_ids(), batch.trajectory_ids(), sg, gamma=o.gamma, omega=o.omega,
                               convention=o.convention)
        sizes = torch.bincount(sg)
        sizes = sizes[sizes > 0]
        return CreditResult(advantages=res.advantages, metrics={
            "step_groups": float(res.num_step_groups),
            "singleton_step_group_fraction": res.num_singleton_step_groups / max(res.num_step_groups, 1),
            "mean_step_group_size": float(sizes.double().mean()),
            "step_advantage_abs": float(res.step_advantages.abs().mean()),
            "episode_advantage_abs": float(res.episode_advantages.abs().mean()),
        }, loss_inputs={"step_group_ids": sg, "gigpo": res})


# -- sample filters -------------------------------------------------------------------------------


class AgentSampleFilter(Method):
    """Base of the agent trainer's sample filters."""

    metrics: tuple = ()

    def before_advantage(self, trainer, batch) -> dict:
        return {}

    def select_tasks(self, trainer, candidates: list[int]) -> list[int]:
        return list(candidates)


AGENT_FILTERS = Registry("agent sample filter", "sample_filter", AgentSampleFilter)


@AGENT_FILTERS.register("none")
class NoAgentFilter(AgentSampleFilter):
    """Every trajectory enters the update."""


@dataclass
class ARPOAgentOptions:
    capacity: int = field(default=8, metadata={"help": "successful trajectories kept per task"})
    success_threshold: float = field(default=0.1, metadata={"help": "a trajectory whose score exceeds this is buffered"})
    score: str = field(default="won", metadata={"help": "what ARPO scores a trajectory by: won (0/1) or its return",
                                                 "choices": ("won", "return")})
    task_selection: bool = field(default=False, metadata={"help": "keep only training tasks the initial policy solves at least once"})
    selection_episodes: int = field(default=4, metadata={"help": "task selection: tries per candidate task"})


@AGENT_FILTERS.register("arpo")
class ARPOAgentFilter(AgentSampleFilter):
    """ARPO: all-failed task groups get a buffered success of the same task; optional task selection."""

    Options = ARPOAgentOptions
    metrics = ("replaced_trajectories", "buffer_size", "all_failed_groups")
    summed_metrics = ("replaced_trajectories", "all_failed_groups")
    per_rank_state = True

    def __init__(self, options=None):
        super().__init__(options)
        self.buffer = ARPOReplayBuffer(capacity_per_task=self.options.capacity, success_threshold=self.options.success_threshold)

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if o.capacity < 1:
            errs.append(f"arpo.capacity must be >= 1, got {o.capacity}")
        if o.score not in ("won", "return"):
            errs.append(f"arpo.score must be 'won' or 'return', got {o.score!r}")
        if o.selection_episodes < 1:
            errs.append(f"arpo.selection_episodes must be >= 1, got {o.selection_episodes}")
        return errs

    def scores(self, batch) -> torch.Tensor:
        return batch.success() if self.options.score == "won" else batch.trajectory_returns()

    def before_advantage(self, trainer, batch) -> dict:
        scores = self.scores(batch)
        groups = batch.trajectory_groups()
        keys = [e.task_seed for e in batch.episodes]
        gen = torch.Generator().manual_seed(trainer.seed_for(trainer.step + 1, "arpo"))
        failed = self.buffer.all_failed(scores, groups)
        plan = self.buffer.plan_injections(scores, groups, keys, generator=gen)
        self.buffer.update(keys, scores, list(batch.episodes))
        for inj in plan:
            old = batch.episodes[inj.row]
            new = _relabel(inj.payload, group=old.group, trajectory=old.trajectory)
            batch.episodes[inj.row] = new
        return {"replaced_trajectories": float(len(plan)), "buffer_size": float(len(self.buffer)),
                "all_failed_groups": float(sum(failed.values()))}

    def select_tasks(self, trainer, candidates: list[int]) -> list[int]:
        if not self.options.task_selection:
            return list(candidates)
        return trainer.solvable_tasks(candidates, self.options.selection_episodes)

    def state_dict(self) -> dict:
        st = self.buffer.state_dict()
        st["buffers"] = {int(k): [(_episode_state(e), r) for e, r in v] for k, v in st["buffers"].items()}
        return st

    def load_state_dict(self, state: dict) -> None:
        st = dict(state)
        st["buffers"] = {int(k): [(_episode_from_state(e), float(r)) for e, r in v] for k, v in state["buffers"].items()}
        self.buffer.load_state_dict(st)


def _relabel(ep, *, group: int, trajectory: int):
    """A buffered episode placed in another slot: same steps, the slot's group and trajectory ids."""
    from dataclasses import replace

    from ..agents.rollout import Episode

    steps = [replace(s, group=group, trajectory=trajectory) for s in ep.steps]
    return Episode(group=group, trajectory=trajectory, task_seed=ep.task_seed, task_id=ep.task_id, steps=steps)


def _episode_state(ep) -> dict:
    """An episode as plain containers (checkpoint state, loadable with weights_only=True)."""
    return {"group": ep.group, "trajectory": ep.trajectory, "task_seed": ep.task_seed, "task_id": str(ep.task_id),
            "steps": [{"t": s.t, "observation": s.context.observation, "admissible": list(s.context.admissible),
                       "history": [list(h) for h in s.context.history], "objective": s.context.objective, "anchor_text": s.context.anchor,
                       "anchor": str(s.anchor), "action": s.sample.action, "choice": s.sample.choice, "logp": s.sample.logp,
                       "extra": {k: v for k, v in s.sample.extra.items() if isinstance(v, (torch.Tensor, str, int, float))},
                       "reward": s.reward, "terminated": s.terminated, "truncated": s.truncated, "valid": s.valid, "won": s.won}
                      for s in ep.steps]}


def _episode_from_state(d: dict):
    from ..agents.rollout import ActionSample, Episode, StepRecord, TurnContext

    steps = []
    for s in d["steps"]:
        ctx = TurnContext(observation=s["observation"], admissible=tuple(s["admissible"]), history=tuple(tuple(h) for h in s["history"]),
                          objective=s["objective"], turn=s["t"], anchor=s["anchor_text"])
        steps.append(StepRecord(group=d["group"], trajectory=d["trajectory"], t=s["t"], context=ctx, anchor=s["anchor"],
                                sample=ActionSample(action=s["action"], choice=s["choice"], logp=s["logp"], extra=dict(s["extra"])),
                                reward=s["reward"], terminated=s["terminated"], truncated=s["truncated"], valid=s["valid"], won=s["won"]))
    return Episode(group=d["group"], trajectory=d["trajectory"], task_seed=d["task_seed"], task_id=d["task_id"], steps=steps)


# -- POAD / BAD ------------------------------------------------------------------------------------


@dataclass
class BADOptions:
    gamma: float = field(default=0.99, metadata={"help": "discount between actions (BAD's inter-action gamma; 1 inside an action)"})
    lambda_: float = field(default=0.95, metadata={"help": "GAE lambda"})
    critic_lr: float = field(default=1e-3, metadata={"help": "critic learning rate (Adam)"})
    value_epochs: int = field(default=4, metadata={"help": "critic passes per batch (clipped value loss)"})
    value_clip: float = field(default=0.2, metadata={"help": "value-loss clip range"})
    whiten: str = field(default="verl", metadata={"help": "advantage whitening of bad_gae", "choices": ("none", "verl", "population")})


@AGENT_CREDIT.register("bad", aliases=("poad",))
class BADCredit(CreditAssigner):
    """POAD: token-level GAE over the BAD backup with a critic (one token per action for the choice policy)."""

    Options = BADOptions
    metrics = ("value_loss", "value_mean", "explained_variance")

    @classmethod
    def validate(cls, o, config) -> list[str]:
        errs = []
        if not 0.0 <= o.gamma <= 1.0 or not 0.0 <= o.lambda_ <= 1.0:
            errs.append(f"bad.gamma and bad.lambda_ must lie in [0, 1], got {o.gamma}, {o.lambda_}")
        if o.critic_lr <= 0 or o.value_epochs < 1:
            errs.append("bad.critic_lr must be > 0 and bad.value_epochs >= 1")
        if getattr(config, "policy", "small") not in ("small", "tokens"):
            errs.append(f"{cls.__name__}: the critic reads the small policies' encoders; use --policy small (one token per action) or "
                        "--policy tokens (actions written word by word); the LLM policy's token critic is not implemented")
        return errs

    def setup(self, trainer) -> None:
        from ..agents.policies import ChoiceCritic

        seed = trainer.seed_for(0, "critic-init")
        maker = getattr(trainer.policy, "make_token_critic", None)
        self.token_level = maker is not None
        self.critic = (maker(seed=seed) if self.token_level else ChoiceCritic(trainer.policy, seed=seed)).to(trainer.device)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.options.critic_lr)

    def models(self) -> dict:
        return {"critic": self.critic}

    def state_dict(self) -> dict:
        return {"critic_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["critic_optimizer"])

    def _layout(self, batch):
        """Per-trajectory rows: rewards, action-end marks and mask ``[episodes, max_len]`` (one token per action)."""
        E = len(batch.episodes)
        L = max(e.length for e in batch.episodes)
        rew = torch.zeros((E, L), dtype=torch.float64)
        mask = torch.zeros((E, L), dtype=torch.float64)
        for i, e in enumerate(batch.episodes):
            rew[i, :e.length] = torch.tensor([s.reward for s in e.steps], dtype=torch.float64)
            mask[i, :e.length] = 1.0
        return rew, mask

    def compute(self, trainer, batch) -> CreditResult:
        from polab.estimators.action_decomposition import bad_gae

        if self.token_level:
            return self._compute_tokens(batch)
        o = self.options
        steps = batch.steps
        with torch.no_grad():
            v = self.critic(steps).double().cpu()
        rew, mask = self._layout(batch)
        values = torch.zeros_like(rew)
        k = 0
        for i, e in enumerate(batch.episodes):
            values[i, :e.length] = v[k:k + e.length]
            k += e.length
        # episodes cut by the step limit are treated as ended (no bootstrap), as polab's control PPO does
        res = bad_gae(rew, values, mask, mask, gamma=o.gamma, lambda_=o.lambda_, whiten=o.whiten)
        flat = mask.bool()
        self._targets = (res.returns[flat], v)
        return CreditResult(advantages=res.advantages[flat], loss_inputs={"bad": res, "values": values})

    def _compute_tokens(self, batch) -> CreditResult:
        """Token policy: every episode's action tokens laid end to end, BAD-GAE over them, advantages back per step row."""
        from polab.estimators.action_decomposition import bad_gae

        o = self.options
        with torch.no_grad():
            v, tmask = self.critic(batch.steps)
        v, tmask = v.double().cpu(), tmask.double().cpu()
        rew, values, end, mask, where = token_layout(batch, v, tmask)
        # episodes cut by the step limit are treated as ended (no bootstrap), as polab's control PPO does. Inside an action the
        # discount is 1 and lambda is lambda_ (bad_gae's default lambda_intra), as in the authors' POAD recursion:
        # ADRL mappo/utils/language_buffer.py batch_process_tppo, morning9393/ADRL@1a56809cdf861b1cac761554f370d9941b818c42
        res = bad_gae(rew, values, end, mask, gamma=o.gamma, lambda_=o.lambda_, whiten=o.whiten)
        adv, ret = from_token_layout(res.advantages, where, tmask), from_token_layout(res.returns, where, tmask)
        self._targets = (ret, v, tmask)
        return CreditResult(advantages=adv[:, 0].clone(), token=adv, loss_inputs={"bad": res, "values": values})

    def _after_update_tokens(self, batch) -> dict:
        from polab.estimators.gae import clipped_value_loss

        returns, old, m = self._targets
        dev = next(self.critic.parameters()).device
        R, V0, M = (x.to(dev, torch.float32) for x in (returns, old, m))
        losses = []
        for _ in range(self.options.value_epochs):
            pred, _ = self.critic(batch.steps)
            loss = clipped_value_loss(pred, V0, R, M, clip_range=self.options.value_clip).loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), 1.0)
            self.optimizer.step()
            losses.append(float(loss.detach()))
        r, d = returns[m > 0], (returns - old)[m > 0]
        var = float(r.var()) if r.numel() > 1 else 0.0
        ev = 1.0 - float(d.var()) / var if var > 0 else float("nan")
        return {"value_loss": float(sum(losses) / len(losses)), "value_mean": float(old[m > 0].mean()), "explained_variance": ev}

    def after_update(self, trainer, batch, result) -> dict:
        if self.token_level:
            return self._after_update_tokens(batch)
        return self._fit_step_values(batch)

    def _value_predictions(self, steps) -> torch.Tensor:
        """One value per step row (the action-level critic's output)."""
        return self.critic(steps)

    def _fit_step_values(self, batch) -> dict:
        """Clipped value regression of the per-step predictions on this batch's returns (``value_epochs`` passes)."""
        from polab.estimators.gae import clipped_value_loss

        returns, old = self._targets
        dev = next(self.critic.parameters()).device
        R, V0 = returns.to(dev, torch.float32)[:, None], old.to(dev, torch.float32)[:, None]
        m = torch.ones_like(R)
        losses = []
        for _ in range(self.options.value_epochs):
            pred = self._value_predictions(batch.steps)[:, None]
            loss = clipped_value_loss(pred, V0, R, m, clip_range=self.options.value_clip).loss
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.critic.parameters(), 1.0)
            self.optimizer.step()
            losses.append(float(loss.detach()))
        var = float(returns.var()) if returns.numel() > 1 else 0.0
        ev = 1.0 - float((returns - old).var()) / var if var > 0 else float("nan")
        return {"value_loss": float(sum(losses) / len(losses)), "value_mean": float(old.mean()), "explained_variance": ev}


def token_layout(batch, values: torch.Tensor, token_mask: torch.Tensor):
    """Each episode's action tokens end to end: ``(rewards, values, action_end, mask, where)`` of shape ``[episodes, L]``.

    ``values`` and ``token_mask`` are ``[steps, T]`` (the critic's per-token values and the token
    mask of the step rows, trajectory-major as :class:`~polab.scaled.agents.rollout.AgentBatch`
    orders them). The step's reward sits on its action's last token; ``where[k]`` is ``(episode,
    first column)`` of step row ``k``.
    """
    lens = token_mask.sum(1).long().tolist()
    if min(lens) < 1:
        raise ValueError("every step must have at least one action token (the token mask has an empty row).")
    E = len(batch.episodes)
    per_ep, k = [], 0
    for e in batch.episodes:
        per_ep.append(sum(lens[k:k + e.length]))
        k += e.length
    L = max(per_ep)
    dt = values.dtype
    rew, val, end, mask = (torch.zeros((E, L), dtype=dt) for _ in range(4))
    where, k = [], 0
    for i, e in enumerate(batch.episodes):
        c = 0
        for s in e.steps:
            n = lens[k]
            val[i, c:c + n] = values[k, :n]
            mask[i, c:c + n] = 1.0
            end[i, c + n - 1] = 1.0
            rew[i, c + n - 1] = s.reward
            where.append((i, c))
            c += n
            k += 1
    return rew, val, end, mask, where


def from_token_layout(x: torch.Tensor, where, token_mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`token_layout` for one ``[episodes, L]`` tensor: ``[steps, T]`` (0 outside the token mask)."""
    out = torch.zeros(token_mask.shape, dtype=x.dtype)
    for k, (i, c) in enumerate(where):
        n = int(token_mask[k].sum())
        out[k, :n] = x[i, c:c + n]
    return out


@dataclass
class PPOActionOptions(BADOptions):
    """Options of ``ppo-action`` (the same as ``bad``'s: discount, GAE lambda, critic training, whitening)."""


@AGENT_CREDIT.register("ppo-action", aliases=("appo",))
class PPOActionCredit(BADCredit):
    """Action-level PPO: one critic value per action (``V(o)``), action-level GAE, the action's advantage on all its tokens.

    The baseline of POAD's comparison (the authors' APPO: ADRL ``mappo/utils/language_buffer.py``
    ``batch_process_appo``, morning9393/ADRL@1a56809cdf861b1cac761554f370d9941b818c42: GAE over
    actions with one value per action). Departure: ADRL's APPO clips one ratio per action (the
    action's summed token log-probability, ``mappo/trainers/llm_trainer_appo.py`` @262f9bb); here
    the trainer's per-token PPO-clip loss receives the action's advantage on every token (the
    "advantage spread over the action's tokens" form), so the two methods differ only in the advantages.
    """

    Options = PPOActionOptions

    def compute(self, trainer, batch) -> CreditResult:
        from polab.estimators.gae import generalized_advantage_estimation

        o = self.options
        with torch.no_grad():
            if self.token_level:
                vt, tmask = self.critic(batch.steps)
                v = vt[:, 0].double().cpu()
            else:
                v = self.critic(batch.steps).double().cpu()
        rew, mask = self._layout(batch)
        values = torch.zeros_like(rew)
        k = 0
        for i, e in enumerate(batch.episodes):
            values[i, :e.length] = v[k:k + e.length]
            k += e.length
        res = generalized_advantage_estimation(rew, values, mask, gamma=o.gamma, lambda_=o.lambda_, whiten=o.whiten)
        flat = mask.bool()
        self._targets = (res.returns[flat], v)
        return CreditResult(advantages=res.advantages[flat], loss_inputs={"gae": res, "values": values})

    def _value_predictions(self, steps) -> torch.Tensor:
        return self.critic(steps)[0][:, 0] if self.token_level else self.critic(steps)

    def after_update(self, trainer, batch, result) -> dict:
        return self._fit_step_values(batch)  # action-level values, also with the token critic (its first position)

r"""Bellman backup with Action Decomposition (BAD) and POAD's token-level GAE.

A language agent's action (one environment step) is a sequence of tokens
:math:`a_t = (w_t^1, \dots, w_t^{|a_t|})`. BAD (Wen et al. 2024, section 4)
backs up values token by token with

.. math::

    Q_\pi(o_t, w_t^{1:j}) \leftarrow
    \begin{cases}
      \max_{w} Q_\pi(o_t, w_t^{1:j}, w) \text{ (on-policy: } V(o_t, w_t^{1:j})) & j < |a_t| \quad\text{(intra-action)}\\
      r(o_t, a_t) + \gamma\, V_\pi(o_{t+1}) & j = |a_t| \quad\text{(inter-action)},
    \end{cases}

i.e. no reward and no discount between the tokens of one action, and the
environment reward plus the discount :math:`\gamma` only at an action's last
token. Flattening all actions into one token stream with :math:`\gamma` on
every token (the "naive token-level" objective the paper analyses) instead
discounts an action's reward by :math:`\gamma^{|a_t|}` and so depends on the
action's length; BAD removes that discrepancy.

POAD (Policy Optimization with Action Decomposition) runs PPO on tokens with
GAE over the BAD TD errors; :func:`bad_gae` is that estimator, a special case
of :func:`polab.estimators.gae.generalized_advantage_estimation` with the per-token
discount :func:`bad_discounts`.

Invariances (tested): with one-token actions BAD-GAE is PPO's token GAE; the
BAD TD errors of one action sum to the action-level TD error
:math:`r_t + \gamma V(o_{t+1}) - V(o_t)`; with ``lambda_intra=1`` the advantage of an
action's first token is the action-level GAE advantage.

References
----------
Wen, Wan, Zhang, Wang, Wen, "Reinforcing Language Agents via Policy
Optimization with Action Decomposition", NeurIPS 2024, arXiv 2405.15821
(BAD, eqs. 6-7; POAD, section 4.2). Code: morning9393/ADRL.
"""

from __future__ import annotations

import torch

from .checks import as_tensor, check_finite, check_mask, check_ndim, check_same_shape
from .gae import GAEResult, generalized_advantage_estimation

__all__ = ["bad_discounts", "bad_gae", "naive_token_gae", "action_level_td_errors"]


def _check_action_end(action_end, mask):
    m = as_tensor(mask, name="mask")
    check_ndim(m, 2, name="mask", layout="[batch, time]")
    e = as_tensor(action_end, name="action_end").to(m.device)
    check_same_shape(m, e, names=("mask", "action_end"))
    mf = check_mask(m, torch.zeros(m.shape, dtype=torch.float64, device=m.device))
    ef = check_mask(e, mf, name="action_end")
    if bool(((ef > 0) & (mf == 0)).any()):
        raise ValueError("action_end marks a token outside mask: mark the last generated token of each action.")
    # the last generated token of every row must close an action
    idx = torch.arange(mf.shape[1], device=mf.device)[None, :].expand_as(mf)
    last = torch.where(mf > 0, idx, torch.full_like(idx, -1)).amax(dim=1)
    rows = (last >= 0).nonzero().flatten()
    if rows.numel() and bool((ef[rows, last[rows]] == 0).any()):
        bad = rows[ef[rows, last[rows]] == 0].tolist()[:10]
        raise ValueError(f"rows {bad}: the last generated token does not end an action; every action must end inside the row.")
    return mf, ef


def bad_discounts(action_end, mask, *, gamma: float, gamma_intra: float = 1.0) -> torch.Tensor:
    """Per-token discount of BAD: ``gamma`` after an action's last token, ``gamma_intra`` (1 in the paper) inside an action.

    Shapes: ``action_end`` and ``mask`` [batch, time] (0/1; ``action_end`` is
    1 on the last token of each action) -> [batch, time] float64 (the dtype
    of a float ``mask``).
    """
    mf, ef = _check_action_end(action_end, mask)
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= gamma_intra <= 1.0:
        raise ValueError(f"gamma and gamma_intra must lie in [0, 1]; got {gamma}, {gamma_intra}.")
    dt = mask.dtype if isinstance(mask, torch.Tensor) and mask.is_floating_point() else torch.float64
    return torch.where(ef > 0, torch.full_like(ef, gamma), torch.full_like(ef, gamma_intra)).to(dt)


def bad_gae(rewards, values, action_end, mask, *, gamma: float, lambda_: float, lambda_intra: float | None = None,
            bootstrap_values=None, whiten="none") -> GAEResult:
    r"""POAD's token-level GAE over the BAD backup.

    .. math::

        \delta_j = r_j + \gamma_j V_{j+1} - V_j,\quad
        \gamma_j = \begin{cases}\gamma & j \text{ ends an action}\\ 1 & \text{otherwise}\end{cases},\qquad
        \hat A_j = \delta_j + \gamma_j\lambda_j \hat A_{j+1},

    where :math:`V_{j+1}` is the value of the next generated token's state
    (the next action's first token when :math:`j` ends an action, which
    stands for :math:`V(o_{t+1})`), and :math:`r_j` is non-zero only on
    action-ending tokens.

    Parameters
    ----------
    rewards : Tensor, shape [batch, time]
        Environment reward of each action on its last token; 0 elsewhere.
    values : Tensor, shape [batch, time]
        Token-level critic values.
    action_end : Tensor, shape [batch, time], 0/1
        1 on the last token of every action.
    mask : Tensor, shape [batch, time], 0/1
        1 on tokens the agent generated (observation tokens between actions are 0 and skipped).
    gamma : float in [0, 1]
        Inter-action discount.
    lambda_ : float in [0, 1]
        GAE :math:`\lambda` across actions.
    lambda_intra : float in [0, 1], optional
        :math:`\lambda` between tokens of one action; defaults to ``lambda_``
        (a single :math:`\lambda` per token). ``1`` makes the first token of
        each action carry the action-level GAE advantage exactly.
    bootstrap_values : Tensor, shape [batch], optional
        Value after the row's last action (non-terminal rows).
    whiten : {"none", "verl", "population"}

    Returns
    -------
    GAEResult

    Notes
    -----
    The backup (discount 1 and no reward inside an action) is the paper's
    eq. 6-7. Between the tokens of one action the authors' POAD recursion
    uses discount 1 and the same :math:`\lambda` as across actions (ADRL,
    ``mappo/utils/language_buffer.py``, ``batch_process_tppo``,
    morning9393/ADRL@1a56809cdf861b1cac761554f370d9941b818c42): the default
    ``lambda_intra=None`` is that choice; ``lambda_intra`` exposes it.
    """
    mf, ef = _check_action_end(action_end, mask)
    r = as_tensor(rewards, name="rewards")
    check_same_shape(r, mf, names=("rewards", "mask"))
    if r.is_floating_point():
        check_finite(r, name="rewards")
    if bool(((r != 0) & (ef.to(r.device) == 0)).any()):
        raise ValueError("rewards must be 0 on tokens that do not end an action: put each action's reward on its last token.")
    dt = r.dtype if r.is_floating_point() else torch.get_default_dtype()
    disc = bad_discounts(ef, mf, gamma=gamma).to(dt)
    lam_in = float(lambda_) if lambda_intra is None else float(lambda_intra)
    if not 0.0 <= float(lambda_) <= 1.0 or not 0.0 <= lam_in <= 1.0:
        raise ValueError(f"lambda_ and lambda_intra must lie in [0, 1]; got {lambda_}, {lambda_intra}.")
    lam = torch.where(ef > 0, torch.full_like(ef, float(lambda_)), torch.full_like(ef, lam_in)).to(dt)
    return generalized_advantage_estimation(r.to(dt), values, mf.to(dt), gamma=disc, lambda_=lam,
                                            bootstrap_values=bootstrap_values, whiten=whiten)


def naive_token_gae(rewards, values, mask, *, gamma: float, lambda_: float, bootstrap_values=None) -> GAEResult:
    """GAE over the flattened token stream with ``gamma`` on every token (the naive token-level baseline BAD corrects).

    Shapes as in :func:`bad_gae`. With one-token actions it equals :func:`bad_gae`.
    """
    return generalized_advantage_estimation(rewards, values, mask, gamma=gamma, lambda_=lambda_, bootstrap_values=bootstrap_values)


def action_level_td_errors(deltas, action_end, mask) -> torch.Tensor:
    r"""Sum BAD's token TD errors over each action: :math:`\sum_{j\in a_t}\delta_j`.

    Under BAD this telescopes to the action-level TD error
    :math:`r_t + \gamma V(o_{t+1}) - V(o_t)` (with :math:`V(o_t)` the value at
    the action's first token), the identity that makes BAD consistent with
    action-level optimisation.

    Shapes: ``deltas``, ``action_end``, ``mask`` [batch, time] -> [batch,
    time] holding each action's sum on its last token and 0 elsewhere.
    """
    mf, ef = _check_action_end(action_end, mask)
    d = as_tensor(deltas, name="deltas")
    check_same_shape(d, mf, names=("deltas", "mask"))
    out = torch.zeros_like(d)
    run = torch.zeros(d.shape[0], dtype=d.dtype, device=d.device)
    for t in range(d.shape[1]):
        run = run + d[:, t] * mf[:, t].to(d.dtype)
        end = ef[:, t] > 0
        out[:, t] = torch.where(end, run, torch.zeros_like(run))
        run = torch.where(end, torch.zeros_like(run), run)
    return out

"""Returns, TD errors and generalized advantage estimation (GAE) on one rollout.

Conventions (the same as the PPO chapter): arrays are indexed by time ``t = 0..T-1``;
``dones[t] = 1`` means the episode *ended* after step ``t`` (so nothing after ``t`` counts
towards the return at ``t``); ``last_value`` is V(s_T) used to bootstrap a rollout that was
cut off mid-episode (0 if it ended).  Arrays may also be batched, shape ``(batch, T)``
(time is always the last axis; ``last_value`` is then a scalar or one value per row).
Inputs go through ``np.asarray``, so CPU torch tensors work too.
"""

from __future__ import annotations

import numpy as np


def _check(rewards, dones, name_len: int | None = None):
    r = np.asarray(rewards, dtype=float)
    if r.ndim not in (1, 2):
        raise ValueError(f"rewards must be 1-D (one rollout) or 2-D (batch, T), got shape {r.shape}")
    d = np.zeros_like(r) if dones is None else np.asarray(dones, dtype=float)
    if d.shape != r.shape:
        raise ValueError(f"dones has shape {d.shape} but rewards has {r.shape}; pass one flag per step")
    return r, d


def discounted_returns(rewards, gamma: float = 1.0, dones=None, last_value: float = 0.0) -> np.ndarray:
    """G_t = r_t + gamma * (1 - done_t) * G_{t+1}, with G_T = last_value.

    >>> discounted_returns([1, 1, 1], gamma=0.5).tolist()
    [1.75, 1.5, 1.0]
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r, d = _check(rewards, dones)
    out = np.zeros_like(r)
    running = np.broadcast_to(np.asarray(last_value, dtype=float), r.shape[:-1]).copy()
    for t in reversed(range(r.shape[-1])):
        running = r[..., t] + gamma * (1.0 - d[..., t]) * running
        out[..., t] = running
    return out


def td_errors(rewards, values, gamma: float = 1.0, dones=None, last_value: float = 0.0) -> np.ndarray:
    """delta_t = r_t + gamma * (1 - done_t) * V(s_{t+1}) - V(s_t)."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    r, d = _check(rewards, dones)
    v = np.asarray(values, dtype=float)
    if v.shape != r.shape:
        raise ValueError(f"values has shape {v.shape} but rewards has {r.shape}; pass V(s_t) for every step")
    last = np.broadcast_to(np.asarray(last_value, dtype=float), r.shape[:-1])[..., None]
    next_v = np.concatenate([v[..., 1:], last], axis=-1)
    return r + gamma * (1.0 - d) * next_v - v


def gae(rewards, values, gamma: float = 0.99, lam: float = 0.95, dones=None,
        last_value: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Generalized advantage estimation (Schulman et al., 2015).

    A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}.  Returns ``(advantages, returns)``
    where ``returns = advantages + values`` are the value-function targets.
    ``lam=0`` gives one-step TD errors; ``lam=1`` gives Monte-Carlo returns minus values.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    deltas = td_errors(rewards, values, gamma, dones, last_value)
    _, d = _check(rewards, dones)
    adv = np.zeros_like(deltas)
    running = np.zeros(deltas.shape[:-1])
    for t in reversed(range(deltas.shape[-1])):
        running = deltas[..., t] + gamma * lam * (1.0 - d[..., t]) * running
        adv[..., t] = running
    return adv, adv + np.asarray(values, dtype=float)

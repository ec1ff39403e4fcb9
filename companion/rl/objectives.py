"""The PPO clipped surrogate objective (previewed in chapter 6, used in chapter 7).

With probability ratio ``rho = pi_new(a|s) / pi_old(a|s)`` and advantage ``A``:

    L_clip = min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)

Maximizing it pushes rho up for good actions (A > 0) but gains nothing beyond 1 + eps, and
pushes rho down for bad actions (A < 0) but gains nothing below 1 - eps: each update
stays close to the policy that collected the data.
"""

from __future__ import annotations

import numpy as np
import torch

from companion import validation


def clipped_surrogate(ratio, advantage, eps: float = 0.2):
    """Elementwise ``min(ratio * A, clip(ratio, 1-eps, 1+eps) * A)`` (NumPy or torch inputs)."""
    eps = validation.number("eps (the clip range)", eps, minimum=0.0)
    if isinstance(ratio, torch.Tensor) or isinstance(advantage, torch.Tensor):
        ratio, advantage = torch.as_tensor(ratio), torch.as_tensor(advantage)
        return torch.minimum(ratio * advantage, torch.clamp(ratio, 1 - eps, 1 + eps) * advantage)
    ratio, advantage = np.asarray(ratio, dtype=float), np.asarray(advantage, dtype=float)
    return np.minimum(ratio * advantage, np.clip(ratio, 1 - eps, 1 + eps) * advantage)


def ppo_clip_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor,
                  eps: float = 0.2, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Loss to *minimize*: the negative mean clipped surrogate over (masked) actions.

    Returns ``(loss, stats)`` with the fraction of clipped actions and the approximate KL
    ``mean(logp_old - logp_new)`` between the old and new policy.
    """
    if logp_new.shape != logp_old.shape or logp_new.shape != advantages.shape:
        raise ValueError(
            f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and advantages "
            f"{tuple(advantages.shape)} must have the same shape (one entry per action)"
        )
    ratio = torch.exp(logp_new - logp_old.detach())
    surrogate = clipped_surrogate(ratio, advantages.detach(), eps)
    clipped = ((ratio - 1).abs() > eps).float()
    approx_kl = (logp_old - logp_new).detach()
    if mask is None:
        mask = torch.ones_like(surrogate)
    mask = mask.float()
    n = mask.sum().clamp(min=1)
    loss = -(surrogate * mask).sum() / n
    stats = {"clip_frac": float((clipped * mask).sum() / n),
             "approx_kl": float((approx_kl * mask).sum() / n)}
    return loss, stats

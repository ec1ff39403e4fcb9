"""Reward over-optimization, measured: Gao, Schulman & Hilton (2022), "Scaling laws for reward
model overoptimization".

With ``d = sqrt(KL(pi || pi_init))`` (nats), the gold reward *gain* over the initial policy
follows, for best-of-n sampling and for RL respectively,

    R_bon(d) = d * (alpha - beta * d)          R_rl(d) = d * (alpha - beta * log d)

Both rise, peak and fall: the proxy keeps improving while the gold score turns down.
Both forms are linear in (alpha, beta), so least squares fits them in closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def kl_best_of_n(n: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """KL(best-of-n || pi) = log n - (n - 1) / n nats: an upper bound, exact without ties.

    >>> float(kl_best_of_n(1)), round(float(kl_best_of_n(4)), 4)
    (0.0, 0.6363)
    """
    n = np.asarray(n, dtype=float)
    if not np.isfinite(n).all() or (n < 1).any():
        raise ValueError(f"n must be >= 1 (samples per prompt), got {n.tolist()}")
    return np.log(n) - (n - 1) / n


@dataclass(frozen=True)
class GaoFit:
    """A fitted over-optimization curve ``R(d)``; ``form`` is "bon" or "rl"."""

    form: str
    alpha: float
    beta: float

    def __post_init__(self):
        if self.form not in ("bon", "rl"):
            raise ValueError(f"form must be 'bon' (best-of-n) or 'rl', got {self.form!r}")

    def __call__(self, d) -> np.ndarray:
        d = np.asarray(d, dtype=float)
        if self.form == "bon":
            return d * (self.alpha - self.beta * d)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(d > 0, d * (self.alpha - self.beta * np.log(np.where(d > 0, d, 1.0))), 0.0)

    @property
    def peak(self) -> float:
        """The ``d`` where the fitted gold gain is largest (``inf`` if it never turns down)."""
        if self.beta <= 0:
            return float("inf")
        return self.alpha / (2 * self.beta) if self.form == "bon" else float(np.exp(self.alpha / self.beta - 1))


def fit_gao(d, gain, form: str) -> GaoFit:
    """Least-squares fit of Gao et al.'s form (``"bon"`` or ``"rl"``) to gold gains at distances ``d``.

    ``gain`` is the gold score minus the initial policy's; ``d`` is sqrt(KL).
    """
    if form not in ("bon", "rl"):
        raise ValueError(f"form must be 'bon' (best-of-n) or 'rl', got {form!r}")
    d, gain = np.asarray(d, dtype=float), np.asarray(gain, dtype=float)
    if d.shape != gain.shape or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"d and gain must be 1-D of the same length >= 2, got shapes {d.shape} and {gain.shape}")
    if not (np.isfinite(d).all() and np.isfinite(gain).all()):
        raise ValueError(f"d and gain must be finite; drop the NaN/inf points first ({(~np.isfinite(d)).sum()} "
                         f"in d, {(~np.isfinite(gain)).sum()} in gain)")
    if (d < 0).any():
        raise ValueError("d = sqrt(KL) must be >= 0")
    second = -d ** 2 if form == "bon" else -d * np.log(np.where(d > 0, d, 1.0))
    design = np.stack([d, second], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return GaoFit(form, float(alpha), float(beta))

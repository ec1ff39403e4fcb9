"""REINFORCE (Williams, 1992) with and without a baseline, on Gymnasium's CartPole.

The policy is linear-softmax, ``pi(a|s) = softmax(s @ theta)``, small enough for NumPy and
for its gradient to be written by hand:

    grad log pi(a|s) = outer(s, onehot(a) - pi(.|s))

An episode's gradient estimate is ``sum_t grad log pi(a_t|s_t) * (G_t - b_t)`` where
``G_t`` is the discounted reward-to-go and ``b_t`` a baseline.  Any baseline that does not
depend on the action leaves the expected gradient unchanged but can shrink its variance.
Here the baseline is the batch's average return-to-go at the same time step (``"mean"``),
a cheap Monte-Carlo estimate of the value V(s_t) in an environment where how long the pole
has already stayed up says most of what matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from companion import validation
from companion.rl.bandits import softmax
from companion.rl.returns import discounted_returns

BASELINES = ("none", "mean")


@dataclass
class ReinforceConfig:
    """Settings of :func:`reinforce` (CartPole-sized defaults)."""

    iterations: int = 60
    batch_episodes: int = 8
    lr: float = 0.01
    gamma: float = 0.99
    baseline: str = "none"
    normalize_grad: bool = False
    max_steps: int = 500
    env_id: str = "CartPole-v1"
    seed: int = 0

    def __post_init__(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        self.iterations = validation.integer("iterations", self.iterations, minimum=1)
        self.batch_episodes = validation.integer("batch_episodes", self.batch_episodes, minimum=1)
        self.max_steps = validation.integer("max_steps", self.max_steps, minimum=1)
        self.lr = validation.number("lr", self.lr, minimum=0.0)
        self.gamma = validation.number("gamma", self.gamma, minimum=0.0, maximum=1.0)


class LinearSoftmaxPolicy:
    """pi(a|s) = softmax(s @ theta) with theta of shape (obs_dim, n_actions)."""

    def __init__(self, obs_dim: int, n_actions: int, theta: np.ndarray | None = None):
        self.theta = np.zeros((obs_dim, n_actions)) if theta is None else np.array(theta, dtype=float)
        if self.theta.shape != (obs_dim, n_actions):
            raise ValueError(f"theta must have shape {(obs_dim, n_actions)}, got {self.theta.shape}")

    def probs(self, obs: np.ndarray) -> np.ndarray:
        return softmax(np.asarray(obs, dtype=float) @ self.theta)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> int:
        p = self.probs(obs)
        return int(min(np.searchsorted(np.cumsum(p), rng.random(), side="right"), len(p) - 1))

    def grad_log_prob(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Per-step gradients of log pi(a_t|s_t): shape (T, obs_dim, n_actions)."""
        obs = np.atleast_2d(np.asarray(obs, dtype=float))
        p = softmax(obs @ self.theta, axis=-1)
        onehot = np.eye(self.theta.shape[1])[np.asarray(actions)]
        return obs[:, :, None] * (onehot - p)[:, None, :]


@dataclass
class Episode:
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray

    @property
    def total_reward(self) -> float:
        return float(self.rewards.sum())


def make_env(env_id: str = "CartPole-v1", max_steps: int = 500):
    import gymnasium as gym

    return gym.make(env_id, max_episode_steps=max_steps)


def rollout(env, policy: LinearSoftmaxPolicy, rng: np.random.Generator, seed: int | None = None) -> Episode:
    """Play one episode with ``policy``; returns its observations, actions and rewards."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards = [], [], []
    done = False
    while not done:
        a = policy.act(obs, rng)
        observations.append(obs)
        actions.append(a)
        obs, r, terminated, truncated, _ = env.step(a)
        rewards.append(r)
        done = terminated or truncated
    return Episode(np.array(observations), np.array(actions), np.array(rewards, dtype=float))


def time_baseline(returns: list[np.ndarray]) -> list[np.ndarray]:
    """b_t = mean over the batch's episodes (that lasted past t) of their return-to-go at t."""
    horizon = max(len(g) for g in returns)
    total, count = np.zeros(horizon), np.zeros(horizon)
    for g in returns:
        total[: len(g)] += g
        count[: len(g)] += 1
    mean = total / np.maximum(count, 1)
    return [mean[: len(g)] for g in returns]


def episode_gradients(policy: LinearSoftmaxPolicy, episodes: list[Episode], gamma: float,
                      baseline: str = "none") -> np.ndarray:
    """One REINFORCE gradient estimate per episode, shape (n_episodes, obs_dim, n_actions)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    returns = [discounted_returns(ep.rewards, gamma) for ep in episodes]
    baselines = time_baseline(returns) if baseline == "mean" else [np.zeros_like(g) for g in returns]
    grads = []
    for ep, g, b in zip(episodes, returns, baselines):
        glp = policy.grad_log_prob(ep.observations, ep.actions)
        grads.append(np.tensordot(g - b, glp, axes=(0, 0)))
    return np.array(grads)


def reinforce(cfg: ReinforceConfig, progress: bool = False) -> dict:
    """Train a linear-softmax policy with REINFORCE; returns the per-iteration history.

    ``history["episode_return"]``: mean undiscounted return of each iteration's batch;
    ``history["grad_norm"]``: norm of the batch gradient; ``history["theta"]``: final weights.
    """
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.env_id, cfg.max_steps)
    env.reset(seed=cfg.seed)
    policy = LinearSoftmaxPolicy(env.observation_space.shape[0], env.action_space.n)
    history = {"episode_return": [], "grad_norm": []}
    iterator = range(cfg.iterations)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"REINFORCE ({cfg.baseline})", leave=False)
    for _ in iterator:
        episodes = [rollout(env, policy, rng) for _ in range(cfg.batch_episodes)]
        grad = episode_gradients(policy, episodes, cfg.gamma, cfg.baseline).mean(axis=0)
        norm = float(np.linalg.norm(grad))
        if cfg.normalize_grad and norm > 0:
            grad = grad / norm
        policy.theta += cfg.lr * grad  # gradient *ascent* on expected return
        history["episode_return"].append(float(np.mean([ep.total_reward for ep in episodes])))
        history["grad_norm"].append(norm)
    env.close()
    history["theta"] = policy.theta.copy()
    return history

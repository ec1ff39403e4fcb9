"""Multi-armed bandits: the smallest RL problem, with exploration and nothing else.

There is one state and ``k`` actions ("arms").  Pulling arm ``a`` pays a noisy reward with
an unknown mean ``q*(a)``; the agent wants the most total reward, so it must *explore*
(pull arms to learn their means) and *exploit* (pull the arm that looks best).

Everything is vectorized over independent *runs* (rows), so averaging a learning curve
over hundreds of seeds costs one NumPy loop over time steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from companion import validation


@dataclass
class GaussianBandit:
    """``runs`` independent k-armed bandits; arm ``a`` of run ``r`` pays N(means[r, a], noise^2)."""

    means: np.ndarray
    noise: float = 1.0

    def __post_init__(self):
        self.means = np.atleast_2d(np.asarray(self.means, dtype=float))
        if self.means.shape[1] < 2:
            raise ValueError(f"a bandit needs at least 2 arms, got means of shape {self.means.shape}")
        self.noise = validation.number("noise", self.noise, minimum=0.0)

    @classmethod
    def testbed(cls, k: int = 10, runs: int = 1, seed: int = 0, noise: float = 1.0) -> GaussianBandit:
        """Sutton & Barto's k-armed testbed: true means drawn from N(0, 1), one set per run."""
        rng = np.random.default_rng(seed)
        return cls(rng.normal(0.0, 1.0, size=(runs, k)), noise=noise)

    @property
    def runs(self) -> int:
        return self.means.shape[0]

    @property
    def k(self) -> int:
        return self.means.shape[1]

    def pull(self, actions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One reward per run for the chosen ``actions`` (shape ``(runs,)``)."""
        mu = self.means[np.arange(self.runs), actions]
        return mu + self.noise * rng.standard_normal(self.runs)


def _argmax_random_ties(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax that breaks ties uniformly at random (plain argmax favours arm 0)."""
    noise = rng.random(values.shape) * 1e-9
    best = values.max(axis=1, keepdims=True)
    return np.argmax(np.where(values >= best, 1.0 + noise, 0.0), axis=1)


@dataclass
class EpsilonGreedy:
    """Pull the arm with the highest estimate, except with probability epsilon pull a random one.

    Estimates are sample averages (``step_size=None``) or exponential recency-weighted
    averages with a constant step size.  ``initial`` > 0 gives "optimistic" starts.
    """

    k: int
    runs: int = 1
    epsilon: float = 0.1
    initial: float = 0.0
    step_size: float | None = None
    Q: np.ndarray = field(init=False)
    N: np.ndarray = field(init=False)

    def __post_init__(self):
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.step_size is not None:
            self.step_size = validation.number("step_size (None: sample averages)", self.step_size, above=0.0,
                                               maximum=1.0)
        self.Q = np.full((self.runs, self.k), float(self.initial))
        self.N = np.zeros((self.runs, self.k))

    def select(self, rng: np.random.Generator) -> np.ndarray:
        greedy = _argmax_random_ties(self.Q, rng)
        explore = rng.random(self.runs) < self.epsilon
        return np.where(explore, rng.integers(0, self.k, self.runs), greedy)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        rows = np.arange(self.runs)
        self.N[rows, actions] += 1
        alpha = 1.0 / self.N[rows, actions] if self.step_size is None else self.step_size
        self.Q[rows, actions] += alpha * (rewards - self.Q[rows, actions])

    def estimates(self) -> np.ndarray:
        return self.Q


@dataclass
class UCB:
    """Upper confidence bound: pull argmax_a Q(a) + c * sqrt(ln t / N(a)); untried arms first."""

    k: int
    runs: int = 1
    c: float = 2.0
    Q: np.ndarray = field(init=False)
    N: np.ndarray = field(init=False)
    t: int = field(init=False, default=0)

    def __post_init__(self):
        self.c = validation.number("c", self.c, minimum=0.0)
        self.Q = np.zeros((self.runs, self.k))
        self.N = np.zeros((self.runs, self.k))

    def scores(self) -> np.ndarray:
        """Q + exploration bonus; +inf for arms never pulled."""
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus = self.c * np.sqrt(np.log(max(self.t, 1)) / self.N)
        return np.where(self.N == 0, np.inf, self.Q + bonus)

    def select(self, rng: np.random.Generator) -> np.ndarray:
        return _argmax_random_ties(self.scores(), rng)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.t += 1
        rows = np.arange(self.runs)
        self.N[rows, actions] += 1
        self.Q[rows, actions] += (rewards - self.Q[rows, actions]) / self.N[rows, actions]

    def estimates(self) -> np.ndarray:
        return self.Q


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass
class GradientBandit:
    """A softmax policy over learned preferences H, trained by stochastic gradient ascent.

    ``pi = softmax(H)``; after reward R for action A:
    ``H[A] += alpha (R - b)(1 - pi[A])`` and ``H[a] -= alpha (R - b) pi[a]`` for a != A,
    where the baseline ``b`` is the running average reward (or 0 without a baseline).
    This is REINFORCE for a one-step problem.
    """

    k: int
    runs: int = 1
    alpha: float = 0.1
    baseline: bool = True
    H: np.ndarray = field(init=False)
    avg_reward: np.ndarray = field(init=False)
    t: int = field(init=False, default=0)

    def __post_init__(self):
        self.alpha = validation.number("alpha", self.alpha, above=0.0)
        self.H = np.zeros((self.runs, self.k))
        self.avg_reward = np.zeros(self.runs)

    def policy(self) -> np.ndarray:
        return softmax(self.H, axis=1)

    def select(self, rng: np.random.Generator) -> np.ndarray:
        cdf = np.cumsum(self.policy(), axis=1)
        u = rng.random((self.runs, 1))
        return np.minimum((u > cdf).sum(axis=1), self.k - 1)

    def update(self, actions: np.ndarray, rewards: np.ndarray) -> None:
        pi = self.policy()
        b = self.avg_reward if self.baseline else 0.0
        onehot = np.eye(self.k)[actions]
        self.H += self.alpha * ((rewards - b)[:, None]) * (onehot - pi)
        self.t += 1
        self.avg_reward += (rewards - self.avg_reward) / self.t

    def estimates(self) -> np.ndarray:
        """The policy's probabilities (a gradient bandit keeps no value estimates)."""
        return self.policy()


def cumulative_regret(means: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Cumulative (pseudo-)regret sum_t (max_a q*(a) - q*(A_t)), shape ``(steps, runs)``.

    ``means``: ``(runs, k)`` or ``(k,)``; ``actions``: ``(steps, runs)`` or ``(steps,)``.
    """
    means = np.atleast_2d(np.asarray(means, dtype=float))
    actions = np.asarray(actions)
    if actions.ndim == 1:
        actions = actions[:, None]
    if actions.shape[1] != means.shape[0]:
        raise ValueError(f"actions have {actions.shape[1]} runs but means have {means.shape[0]}")
    gaps = means.max(axis=1)[None, :] - means[np.arange(means.shape[0])[None, :], actions]
    return np.cumsum(gaps, axis=0)


@dataclass
class BanditRun:
    """What happened in ``run_bandit``: arrays of shape ``(steps, runs)`` (snapshots: ``(n, runs, k)``)."""

    actions: np.ndarray
    rewards: np.ndarray
    regret: np.ndarray
    optimal: np.ndarray
    snapshot_steps: np.ndarray
    snapshots: np.ndarray

    def mean_regret(self) -> np.ndarray:
        return self.regret.mean(axis=1)

    def optimal_fraction(self) -> np.ndarray:
        return self.optimal.mean(axis=1)


def run_bandit(agent, bandit: GaussianBandit, steps: int, seed: int = 0, snapshot_every: int = 0) -> BanditRun:
    """Let ``agent`` play ``bandit`` for ``steps`` pulls (all runs in parallel)."""
    steps = validation.integer("steps", steps, minimum=1)
    snapshot_every = validation.integer("snapshot_every (0: no snapshots)", snapshot_every, minimum=0)
    if agent.runs != bandit.runs or agent.k != bandit.k:
        raise ValueError(
            f"agent is sized runs={agent.runs}, k={agent.k} but the bandit has runs={bandit.runs}, "
            f"k={bandit.k}; build the agent with the bandit's runs and k."
        )
    rng = np.random.default_rng(seed)
    actions = np.zeros((steps, bandit.runs), dtype=int)
    rewards = np.zeros((steps, bandit.runs))
    snap_steps, snaps = [], []
    for t in range(steps):
        a = agent.select(rng)
        r = bandit.pull(a, rng)
        agent.update(a, r)
        actions[t], rewards[t] = a, r
        if snapshot_every and ((t + 1) % snapshot_every == 0 or t == 0):
            snap_steps.append(t + 1)
            snaps.append(np.array(agent.estimates(), copy=True))
    best = bandit.means.argmax(axis=1)
    return BanditRun(
        actions=actions, rewards=rewards, regret=cumulative_regret(bandit.means, actions),
        optimal=(actions == best[None, :]), snapshot_steps=np.array(snap_steps, dtype=int),
        snapshots=np.array(snaps) if snaps else np.zeros((0, bandit.runs, bandit.k)),
    )

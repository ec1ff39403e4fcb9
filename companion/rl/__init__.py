"""Reinforcement-learning basics, small enough to read in one sitting.

- :mod:`companion.rl.bandits`   - multi-armed bandits (epsilon-greedy, UCB, gradient bandit) and regret
- :mod:`companion.rl.returns`   - discounted returns, TD errors and GAE (reused by the PPO chapter)
- :mod:`companion.rl.objectives` - the PPO clipped surrogate objective
- :mod:`companion.rl.reinforce` - REINFORCE with and without a baseline on CartPole (NumPy)
- :mod:`companion.rl.lm`        - REINFORCE for a language model with a programmatic reward
"""

from companion.rl.bandits import (
    UCB,
    EpsilonGreedy,
    GaussianBandit,
    GradientBandit,
    cumulative_regret,
    run_bandit,
)
from companion.rl.objectives import clipped_surrogate, ppo_clip_loss
from companion.rl.returns import discounted_returns, gae, td_errors

__all__ = [
    "UCB", "EpsilonGreedy", "GaussianBandit", "GradientBandit", "clipped_surrogate",
    "cumulative_regret", "discounted_returns", "gae", "ppo_clip_loss", "run_bandit", "td_errors",
]

"""PPO for language models (RLHF), in one file: a ``PPOConfig`` and a ``PPOTrainer``.

The loop InstructGPT used, with the math and metric names of TRL's last ``PPOTrainer``
(removed from TRL in 2026), so runs compare with old TRL logs and with "The N+
implementation details of RLHF with PPO" (Huang et al., 2024)::

    for each step:
        rollout     prompts -> the policy samples responses (temperature T, no top-k/top-p)
        score       a reward model (or Python reward functions) scores each finished response
        shape       r_t = -kl_coef * KL_t on every response token, + the score on the last one
        advantages  GAE over the response (gamma, lam), whitened over the batch
        update      num_ppo_epochs over shuffled minibatches: clipped policy loss + vf_coef *
                    clipped value loss

Decisions on which implementations disagree are marked ``DECISION`` in the code, each with
the choice made and why.  A run on CPU needs nothing but this file, ``companion.rl.returns``
(GAE) and ``companion.reward.score`` (reading a reward model).

Memory (gpu profile, SmolLM2-135M with LoRA r=16 on a 16 GB T4, fp32 weights): the policy's
frozen base and reference (the same weights, adapter off) ~0.54 GB, the reward model ~0.54 GB,
LoRA + value head + Adam state < 0.1 GB, activations and logits of a micro-batch of 8
sequences of 512 tokens ~3 GB (logits alone 8 x 512 x 49,152 x 4 B = 0.8 GB): about 5 GB
in all, a third of the card.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from companion import validation
from companion.rl.lm import token_logprobs
from companion.rl.returns import gae
from companion.tokenizer import chat_stop_ids

KL_ESTIMATORS = ("k1", "k3")
RewardFunc = Callable[..., Sequence[float | None]]


# --------------------------------------------------------------------------- small pieces
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / std over the masked positions (std unbiased; the mean is kept if not ``shift_mean``).

    Positions outside the mask are returned as 0.  ``all_sum`` (several processes) sums a tensor
    over them, so the mean and std are the whole batch's, as in one process.
    """
    if all_sum is None:
        mean = masked_mean(x, mask)
        var = masked_mean((x - mean) ** 2, mask)
        n = mask.sum()
    else:
        n = all_sum(mask.sum())
        mean = all_sum((x * mask).sum()) / n.clamp(min=1)
        var = all_sum(((x - mean) ** 2 * mask).sum()) / n.clamp(min=1)
    if n > 1:
        var = var * n / (n - 1)  # Bessel's correction, as TRL's masked_var
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probs.

    With ``logr = log pi_ref(y_t) - log pi(y_t)``: ``k1 = -logr`` (unbiased, can be negative
    on a single token), ``k3 = exp(logr) - 1 - logr`` (unbiased, never negative, lower variance;
    Schulman, "Approximating KL divergence", 2020).
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    logr = ref_logprobs - logprobs
    return -logr if estimator == "k1" else torch.expm1(logr) - logr


def shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor,
                   kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``(rewards, non_score_reward)`` of shape (batch, T).

    Every response token pays ``-kl_coef * kl_t``; the last real token (the stop token, or
    the last generated one when the response was cut off) also gets the sequence's score.

    DECISION: the score lands on the last response token itself.  TRL put it one slot
    *after* it (when there was room) and kept a value one step past the end so that GAE
    carried it back; both give the same advantages on the response, ours without the
    off-by-one slot.
    """
    non_score = -kl_coef * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards = non_score.clone()
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards * mask, non_score


def advantages_and_returns(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                           gamma: float = 1.0, lam: float = 0.95, whiten: bool = True,
                           all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None,
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE on each response (``companion.rl.returns.gae``), then whitened advantages.

    Values and rewards after a response's end are zeroed, so the last token's TD error is
    ``r_T - V(s_T)``: the episode ends there.  ``returns = advantages + values`` (before
    whitening) are the value targets.  ``all_sum``: see :func:`masked_whiten`.
    """
    r = (rewards * mask).detach().float().cpu().numpy()
    v = (values * mask).detach().float().cpu().numpy()
    adv, ret = gae(r, v, gamma=gamma, lam=lam)
    adv = torch.as_tensor(adv, dtype=torch.float32, device=rewards.device) * mask
    ret = torch.as_tensor(ret, dtype=torch.float32, device=rewards.device) * mask
    if whiten:
        adv = masked_whiten(adv, mask, all_sum=all_sum)
    return adv, ret


def policy_loss(new_logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate as a loss: mean over tokens of ``max(-A r, -A clip(r, 1 - e, 1 + e))``."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    losses = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(losses, clipped), mask)
    with torch.no_grad():
        diff = new_logprobs - old_logprobs
        stats = {"clipfrac": masked_mean((clipped > losses).float(), mask),
                 "approxkl": 0.5 * masked_mean(diff ** 2, mask),
                 "ratio": masked_mean(ratio, mask)}
    return loss, stats


def value_loss(new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, dict]:
    """``0.5 * max((V - R)^2, (clip(V, V_old +- e_v) - R)^2)``, averaged over tokens."""
    clipped = torch.clamp(new_values, old_values - cliprange_value, old_values + cliprange_value)
    loss1, loss2 = (new_values - returns) ** 2, (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss1, loss2), mask)
    return loss, {"clipfrac": masked_mean((loss2 > loss1).float(), mask).detach()}


class AdaptiveKLController:
    """Ziegler et al. (2019): nudge ``kl_coef`` so the measured KL tracks ``target``.

    ``kl_coef <- kl_coef * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)`` after each
    batch of ``n`` episodes.  Ziegler's values: init 0.2, target 6 nats, horizon 10,000.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        init_kl_coef = validation.number("init_kl_coef", init_kl_coef, minimum=0.0)
        if not all(isinstance(x, numbers.Real) and math.isfinite(x) and x > 0 for x in (target, horizon)):
            raise ValueError(f"kl_target and kl_horizon must be finite numbers > 0, got {target!r} and {horizon!r}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_episodes: int) -> float:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value


# --------------------------------------------------------------------------- configuration
@dataclass
class PPOConfig:
    """Settings of :class:`PPOTrainer`.  Defaults are TRL's last ``PPOConfig``'s.

    The tiny profile's tuned values (a 2.6M-parameter model trained from scratch, which
    tolerates far larger steps than a pretrained 1B model) are :func:`tiny_ppo_config`'s.

    - ``steps``: PPO iterations; each samples ``batch_size`` responses (in each process: several
      GPUs, launched with ``companion/accelerate_configs/multi_gpu.yaml``, train on N x ``batch_size``).
    - ``num_mini_batches`` / ``gradient_accumulation_steps``: each epoch splits the batch into
      this many minibatches (one optimizer step each), each of this many micro-batches.
    - ``num_ppo_epochs`` (4): passes over each batch; more reuse, more drift from the sampler.
    - ``learning_rate`` (3e-6): Adam's step size (TRL's default for 1B-class models).
    - ``max_new_tokens`` (53) and ``temperature`` (0.7): the rollout's length and randomness;
      every log-prob is computed from logits divided by the same temperature.
    - ``kl_coef`` (0.05): weight of the per-token KL penalty against the reference model.
    - ``kl_estimator`` ("k1"): ``"k1"`` or ``"k3"`` (see :func:`kl_penalty`).
    - ``kl_target`` / ``kl_horizon``: set ``kl_target`` (nats per response) to use the
      adaptive controller of Ziegler et al. instead of a fixed ``kl_coef``.
    - ``cliprange`` (0.2), ``cliprange_value`` (0.2): PPO's policy and value clipping.
    - ``vf_coef`` (0.1): weight of the value loss in the total loss.
    - ``gamma`` (1.0), ``lam`` (0.95): GAE; gamma 1 because a response is short and the
      reward arrives at its end.
    - ``whiten_rewards`` (False): whiten the per-token rewards before GAE.
    - ``missing_eos_penalty`` (None): subtracted from the score of a response that never
      stopped (the "EOS trick"); None = no penalty.
    - ``normalize_scores`` (False): rescale the reward to mean 0, std 1 on samples of the
      initial policy (Huang et al.'s first detail), measured once before training.
    - ``reward_weights`` (None): one weight per reward function (TRL's GRPO has the same
      setting); the reward is the reward model's score plus the weighted sum. None: all 1.
    - ``max_grad_norm`` (1.0), ``seed`` (0).
    - ``output_dir`` / ``save_steps`` (None): write a checkpoint every ``save_steps`` steps into
      ``output_dir/checkpoint-<step>``, so ``train(resume_from_checkpoint=True)`` continues a run
      that was killed; the resumed run ends with the same numbers as an uninterrupted one.
    """

    steps: int = 100
    batch_size: int = 64
    num_mini_batches: int = 1
    gradient_accumulation_steps: int = 1
    num_ppo_epochs: int = 4
    learning_rate: float = 3e-6
    max_new_tokens: int = 53
    temperature: float = 0.7
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_target: float | None = None
    kl_horizon: float = 10_000
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None
    normalize_scores: bool = False
    reward_weights: list[float] | None = None
    max_grad_norm: float = 1.0
    seed: int = 0
    use_cpu: bool = False
    output_dir: str | None = None
    save_steps: int | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "num_mini_batches", "gradient_accumulation_steps", "num_ppo_epochs",
                     "max_new_tokens"):
            setattr(self, name, validation.integer(name, getattr(self, name), minimum=1))
        if self.batch_size % self.num_mini_batches:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by num_mini_batches="
                             f"{self.num_mini_batches}; choose a batch size that is a multiple of it")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"the minibatch ({self.mini_batch_size} = batch_size / num_mini_batches) is not "
                             f"divisible by gradient_accumulation_steps={self.gradient_accumulation_steps}")
        self.temperature = validation.number("temperature", self.temperature)
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (PPO samples its rollouts), got {self.temperature}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        for name in ("kl_coef", "cliprange", "cliprange_value", "vf_coef", "learning_rate"):
            setattr(self, name, validation.number(name, getattr(self, name), minimum=0.0))
        self.gamma = validation.number("gamma", self.gamma, minimum=0.0, maximum=1.0)
        self.lam = validation.number("lam", self.lam, minimum=0.0, maximum=1.0)
        if self.kl_target is not None:
            self.kl_target = validation.number("kl_target (nats per response; None for a fixed kl_coef)",
                                               self.kl_target, above=0.0)
        self.kl_horizon = validation.number("kl_horizon", self.kl_horizon, above=0.0)
        if self.missing_eos_penalty is not None:
            self.missing_eos_penalty = validation.number(
                "missing_eos_penalty (it is subtracted from the score; None for no penalty)",
                self.missing_eos_penalty, minimum=0.0)
        if self.max_grad_norm is not None:
            self.max_grad_norm = validation.number("max_grad_norm (0 or None: no clipping)", self.max_grad_norm,
                                                   minimum=0.0)
        self.seed = validation.integer("seed", self.seed, minimum=0)
        if self.reward_weights is not None:
            if isinstance(self.reward_weights, (str, bytes)) or not hasattr(self.reward_weights, "__len__"):
                raise ValueError(f"reward_weights must be a list of floats, one per reward function, got "
                                 f"{self.reward_weights!r}")
            self.reward_weights = [validation.number("reward_weights[i]", w) for w in self.reward_weights]
        for name in ("whiten_rewards", "normalize_scores", "use_cpu"):
            setattr(self, name, validation.flag(name, getattr(self, name)))
        if self.save_steps is not None and (isinstance(self.save_steps, bool)
                                            or not isinstance(self.save_steps, numbers.Integral)
                                            or self.save_steps < 1 or not self.output_dir):
            raise ValueError(f"save_steps must be a positive integer with an output_dir to save into, got "
                             f"save_steps={self.save_steps!r}, output_dir={self.output_dir!r}")
        if self.save_steps is not None:
            self.save_steps = int(self.save_steps)

    @property
    def mini_batch_size(self) -> int:
        return self.batch_size // self.num_mini_batches

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps


def tiny_ppo_config(**overrides) -> PPOConfig:
    """The book's tiny-profile settings (CPU, the 2.6M-parameter SFT model of chapter 4).

    Tuned on the tiny world (held-out gold success, paired against SFT):

    - ``learning_rate=1e-4``: the model was trained from scratch at 3e-3 and needs far larger
      steps than TRL's 3e-6 for pretrained 1B models;
    - ``batch_size=32``, ``num_mini_batches=2``, ``num_ppo_epochs=2``: four optimizer steps
      per batch of samples, 24 iterations (about 4 minutes on 2 CPU cores). With 16, the book's
      reward (the reward model plus the topic rule, ``pipeline.ppo_rewards``) gained +0.048,
      +0.120 and +0.060 over SFT at seeds 0, 1, 2; with 24, +0.088, +0.104 and -0.016 (the
      book's run is seed 0, 2.4 standard errors over prompts; the seeds differ by more than that);
    - ``max_new_tokens=200`` (a whole story) at ``temperature=1.0``, as the reward model's
      comparisons were sampled;
    - ``kl_coef=0.2``: with 0.05 the policy drifted to ~10 nats and lost the topic check;
    - ``lam=1.0`` (TRL: 0.95): the topic is settled in a story's first sentence, about 150 tokens
      before the score arrives, and 0.95^150 is nothing. With ``lam=0.95`` that credit has to pass
      through the critic, which is a copy of a reward model that cannot see the topic, and the
      topic rule did not raise the topic check at all (0.524 against SFT's 0.59 at seed 0);
    - ``normalize_scores=True`` and ``missing_eos_penalty=1.0`` (Huang et al.'s details).
    """
    base = dict(steps=24, batch_size=32, num_mini_batches=2, num_ppo_epochs=2, learning_rate=1e-4,
                max_new_tokens=200, temperature=1.0, kl_coef=0.2, vf_coef=0.1, lam=1.0, normalize_scores=True,
                missing_eos_penalty=1.0, use_cpu=True)
    return PPOConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- models
class ValueHead(nn.Module):
    """A scalar head on the policy's last hidden state (the "shared trunk" critic).

    DECISION: zero-initialized, so V = 0 at the start, the mean of normalized scores; the
    other common choice, a separate critic initialized from the reward model, is what
    :class:`PPOTrainer` uses when given ``value_model``.
    """

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


class PolicyAndValue(nn.Module):
    """Policy and critic as one module, so one optimizer (and one DDP wrapper) trains both."""

    def __init__(self, policy: nn.Module, value_model: nn.Module | None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.value_head = None
        # a critic copied from the reward model predicts on the reward model's scale; PPOTrainer sets
        # these when it normalizes the scores, so the critic predicts the normalized returns it is trained on
        self.value_shift, self.value_scale = 0.0, 1.0
        if value_model is None:
            self.value_head = ValueHead(policy.config.hidden_size)
        else:
            prefix = getattr(value_model, "base_model_prefix", "model")
            if not hasattr(value_model, prefix) or not hasattr(value_model, "score"):
                raise ValueError(
                    "value_model must be a decoder sequence-classification model with a trunk "
                    f"(`.{prefix}`) and a `.score` head (e.g. a copy of the reward model); got "
                    f"{type(value_model).__name__}. Pass value_model=None for a value head on the policy."
                )

    def forward(self, input_ids, attention_mask, position_ids):
        shared = self.value_head is not None
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          output_hidden_states=shared, use_cache=False)
        if shared:
            return out.logits, self.value_head(out.hidden_states[-1])
        trunk = getattr(self.value_model, getattr(self.value_model, "base_model_prefix", "model"))
        hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).last_hidden_state
        values = self.value_model.score(hidden).squeeze(-1).float()
        return out.logits, (values - self.value_shift) / self.value_scale


def disable_dropout(model: nn.Module) -> None:
    """Dropout off everywhere: the log-probs of the rollout and of the update must agree."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, context: int,
                      temperature: float) -> torch.Tensor:
    """log pi(y_t) of each response token, from logits divided by the sampling temperature.

    ``logits`` cover prompt + response; the token at ``context + t`` is predicted at
    ``context + t - 1``.
    """
    return token_logprobs(logits[:, context - 1:-1].float() / temperature, responses)


# --------------------------------------------------------------------------- the trainer
@dataclass
class Rollout:
    """One batch of experience, everything the update needs (all tensors on the device)."""

    queries: torch.Tensor        # (B, P) left-padded prompt ids
    responses: torch.Tensor      # (B, T) response ids, PAD after the first stop token
    mask: torch.Tensor           # (B, T) 1 on response tokens up to and including the stop token
    logprobs: torch.Tensor       # (B, T) log pi_old(y_t)
    ref_logprobs: torch.Tensor   # (B, T) log pi_ref(y_t)
    values: torch.Tensor         # (B, T) V_old(s_t)
    scores: torch.Tensor         # (B,) reward of each response (normalized, after the EOS penalty)
    raw_scores: torch.Tensor     # (B,) the reward as the reward model / functions gave it
    texts: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    contains_eos: torch.Tensor | None = None
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # each reward source's own scores (B,)


class PPOTrainer:
    """Train ``policy`` with PPO against a reward model or Python reward functions.

    - ``policy``: a causal LM (a PEFT model works: its adapter-off base is then the reference).
    - ``tokenizer``: the policy's; its PAD must differ from every stop token.
    - ``prompts``: a ``datasets.Dataset`` (or list of dicts) with a ``prompt`` column (a
      string or a list of chat messages) and any other columns, which reward functions get.
    - ``reward_model`` (+ ``reward_tokenizer``, default the policy's): a one-output
      sequence-classification model; it reads the decoded prompt and response, re-tokenized
      with its own tokenizer (so it need not share the policy's vocabulary).
    - ``reward_funcs``: callables with GRPO's signature
      ``f(prompts, completions, completion_ids, **columns) -> list[float | None]``; results of
      several are summed, weighted by ``config.reward_weights`` (None = "does not apply",
      skipped).  Added to the reward model's score when both are given; each source's mean is
      logged as ``rewards/<name>`` (``rewards/reward_model``, ``rewards/<function name>``).
    - ``ref_model``: the frozen reference (default: a copy of ``policy`` before training).
    - ``value_model``: a separate critic with a trunk and a ``.score`` head (InstructGPT
      initialized it from the reward model: pass ``copy.deepcopy(reward_model)``), or None
      for a zero-initialized :class:`ValueHead` on the policy's trunk.
    - ``judge``: optional ``f(rows, texts) -> list[float]`` logged as ``gold/score`` and, as the
      fraction of 1.0s, ``gold/success`` (the tiny world's gold judge plays it).
    """

    def __init__(self, config: PPOConfig, policy, tokenizer, prompts, reward_model=None,
                 reward_tokenizer=None, reward_funcs: RewardFunc | Sequence[RewardFunc] | None = None,
                 ref_model=None, value_model=None, judge: Callable | None = None,
                 stop_ids: Sequence[int] | None = None):
        from accelerate import Accelerator

        if not isinstance(config, PPOConfig):
            raise TypeError(f"config must be a PPOConfig, got {type(config).__name__}; build one with "
                            "ppo.PPOConfig(...) or ppo.tiny_ppo_config(...)")
        if judge is not None and not callable(judge):
            raise TypeError(f"judge must be a function f(rows, texts) -> scores (or None), got {type(judge).__name__}")
        self.config = cfg = config
        self.rows = self._check_prompts(prompts)
        self.tokenizer = tokenizer
        self.stop_ids = list(stop_ids) if stop_ids is not None else chat_stop_ids(tokenizer)
        self.reward_model, self.reward_tokenizer = reward_model, reward_tokenizer or tokenizer
        self.reward_funcs = self._check_reward_funcs(reward_funcs)
        if reward_model is None and not self.reward_funcs:
            raise ValueError("PPOTrainer needs a reward: pass reward_model=..., reward_funcs=[...], or both")
        if cfg.reward_weights is not None and len(cfg.reward_weights) != len(self.reward_funcs):
            raise ValueError(f"config.reward_weights has {len(cfg.reward_weights)} weights for "
                             f"{len(self.reward_funcs)} reward functions; give one weight per function "
                             "(or reward_weights=None for weight 1 each)")
        self._check_tokenizers(policy, reward_model)
        self.judge = judge

        self.accelerator = Accelerator(cpu=cfg.use_cpu)
        self._check_distributed()
        torch.manual_seed(cfg.seed)
        self.is_peft = hasattr(policy, "disable_adapter") and ref_model is None
        if ref_model is None and not self.is_peft:
            ref_model = copy.deepcopy(policy)
        self.ref_model = ref_model
        for m in (policy, value_model, ref_model, reward_model):
            if m is not None:
                disable_dropout(m)
        for m in (ref_model, reward_model):
            if m is not None:
                m.eval().requires_grad_(False).to(self.accelerator.device)
        model = PolicyAndValue(policy, value_model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, eps=1e-5, weight_decay=0.0)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target else None
        self.kl_coef = cfg.kl_coef
        self.score_shift, self.score_scale = 0.0, 1.0
        self.step = 0
        self._stepped = False  # whether the current update has taken an optimizer step (for the OOM retry)
        self.history: dict[str, list] = {}
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        self._order = np.random.default_rng(cfg.seed).permutation(len(self.rows))[rank::world]
        self._cursor = 0
        self._generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)

    # ----------------------------------------------------------------- input checks
    def _check_distributed(self) -> None:
        from accelerate.utils import DistributedType

        kind = self.accelerator.distributed_type
        if kind in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ValueError(
                f"PPOTrainer runs on one device or with DDP (several GPUs, each with a whole copy of the "
                f"models), not with {kind.value}: each process samples responses of its own length with "
                "model.generate, which sharded weights cannot do. Launch with companion/accelerate_configs/"
                "multi_gpu.yaml, or use TRL's GRPOTrainer/RLOOTrainer for FSDP or ZeRO-3."
            )

    def _pooled(self, values: list[float]) -> list[float]:
        """``values`` of every process together (each process has as many); alone, ``values``."""
        if self.accelerator.num_processes == 1:
            return values
        return self.accelerator.gather(torch.tensor(values, device=self.accelerator.device)).tolist()

    @staticmethod
    def _check_reward_funcs(funcs) -> list[RewardFunc]:
        if funcs is None:
            return []
        funcs = [funcs] if callable(funcs) else list(funcs)
        for f in funcs:
            if not callable(f):
                raise TypeError(f"reward_funcs must be callables f(prompts, completions, **kw), got {f!r}")
        return funcs

    def _check_tokenizers(self, policy, reward_model) -> None:
        tok = self.tokenizer
        if tok.pad_token_id is None or tok.pad_token_id in self.stop_ids:
            raise ValueError(
                f"the tokenizer's PAD token ({tok.pad_token!r}) is missing or is a stop token {self.stop_ids}: "
                "PPO must tell padding from a real end of response. Add a distinct one: "
                "tokenizer.add_special_tokens({'pad_token': '<|pad|>'}); model.resize_token_embeddings(len(tokenizer))"
            )
        if reward_model is not None and self.reward_tokenizer is tok:
            rm_vocab = reward_model.get_input_embeddings().weight.shape[0]
            if rm_vocab < len(tok):
                raise ValueError(
                    f"the reward model's vocabulary ({rm_vocab} tokens) is smaller than the policy tokenizer's "
                    f"({len(tok)}): it was trained with another tokenizer. Pass it as reward_tokenizer=...; "
                    "the text is then re-tokenized for the reward model."
                )

    def _check_prompts(self, prompts) -> list[dict]:
        if isinstance(prompts, str) or not hasattr(prompts, "__len__") or len(prompts) == 0:
            raise ValueError("prompts must be a non-empty Dataset or list of dicts with a 'prompt' column, "
                             f"got {type(prompts).__name__}")
        rows = list(prompts)
        for i, r in enumerate(rows):
            if isinstance(r, str):
                raise TypeError(f"prompts[{i}] is the string {r!r}; each prompt row must be a dict with a 'prompt' "
                                "key: pass [{'prompt': p} for p in prompts], or a Dataset with a 'prompt' column")
        rows = [dict(r) for r in rows]
        if not all(isinstance(r, dict) and "prompt" in r for r in rows):
            raise ValueError("every prompt row needs a 'prompt' key (a string or a list of chat messages)")
        for i, r in enumerate(rows):
            if not isinstance(r["prompt"], str):
                validation.chat_messages(f"prompts[{i}]['prompt']", r["prompt"])
        return rows  # prompt lengths are checked against the model's context in rollout()

    # ----------------------------------------------------------------- rollout
    @property
    def policy(self):
        return self.accelerator.unwrap_model(self.model).policy

    def _encode_prompt(self, prompt) -> list[int]:
        tok = self.tokenizer
        if isinstance(prompt, str):
            return tok(prompt, add_special_tokens=False)["input_ids"]
        ids = tok.apply_chat_template(list(prompt), tokenize=True, add_generation_prompt=True, return_dict=True)
        return list(ids["input_ids"])

    def _next_rows(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            if self._cursor >= len(self._order):
                self._cursor = 0
            out.append(self.rows[self._order[self._cursor]])
            self._cursor += 1
        return out

    @torch.no_grad()
    def _forward(self, model, input_ids, attention_mask):
        position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
        return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)

    @torch.no_grad()
    def rollout(self, rows: list[dict]) -> Rollout:
        """Sample one response per row and compute everything PPO needs from it."""
        cfg, tok, dev = self.config, self.tokenizer, self.accelerator.device
        policy = self.policy
        encoded = [self._encode_prompt(r["prompt"]) for r in rows]
        longest = max(len(e) for e in encoded)
        context = getattr(policy.config, "max_position_embeddings", None)
        if context and longest + cfg.max_new_tokens > context:
            raise ValueError(f"a prompt of {longest} tokens + max_new_tokens={cfg.max_new_tokens} exceeds the "
                             f"model's context of {context} tokens: shorten the prompts or lower max_new_tokens")
        pad = tok.pad_token_id
        queries = torch.tensor([[pad] * (longest - len(e)) + e for e in encoded], device=dev)
        query_mask = (torch.arange(longest, device=dev)[None] >= torch.tensor(
            [longest - len(e) for e in encoded], device=dev)[:, None]).long()
        policy.eval()
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self._generator)))
        out = policy.generate(input_ids=queries, attention_mask=query_mask, do_sample=True,
                              temperature=cfg.temperature, top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens,
                              eos_token_id=self.stop_ids, pad_token_id=pad)
        responses = out[:, longest:]
        is_stop = torch.isin(responses, torch.tensor(self.stop_ids, device=dev))
        after_stop = (is_stop.long().cumsum(1) - is_stop.long()) > 0
        mask = (~after_stop).long()
        responses = responses.masked_fill(after_stop, pad)
        contains_eos = is_stop.any(dim=1)

        full = torch.cat([queries, responses], dim=1)
        attn = torch.cat([query_mask, mask], dim=1)
        logits, values = self._forward(self.model, full, attn)
        logprobs = response_logprobs(logits, responses, longest, cfg.temperature)
        if self.is_peft:
            with policy.disable_adapter():
                ref_logits = self._forward(policy, full, attn).logits
        else:
            ref_logits = self._forward(self.ref_model, full, attn).logits
        ref_logprobs = response_logprobs(ref_logits, responses, longest, cfg.temperature)
        values = values[:, longest - 1:-1].float()

        texts = [tok.decode(r[m.bool()].tolist(), skip_special_tokens=True).strip() for r, m in zip(responses, mask)]
        parts = self.score_parts(rows, texts, [r[m.bool()].tolist() for r, m in zip(responses, mask)])
        raw = self.combine(parts)
        scores = (raw - self.score_shift) / self.score_scale
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~contains_eos).float()
        m = mask.float()
        return Rollout(queries, responses, m, logprobs * m, ref_logprobs * m, values * m, scores, raw, texts, rows,
                       contains_eos, parts)

    def score_parts(self, rows: list[dict], texts: list[str],
                    completion_ids: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
        """Each reward source's own scores: ``reward_model``, then one entry per reward function
        (keyed by its name; NaN where it returned None), unweighted."""
        from companion.reward import score as rm_score

        dev = self.accelerator.device
        prompts = [r["prompt"] for r in rows]
        parts: dict[str, torch.Tensor] = {}
        if self.reward_model is not None:
            limit = getattr(self.reward_tokenizer, "model_max_length", None)  # an encoder's 512 positions, say
            limit = limit if limit and limit < 100_000 else None
            parts["reward_model"] = rm_score(self.reward_model, self.reward_tokenizer, prompts, texts,
                                             max_length=limit).to(dev)
        if self.reward_funcs:
            conversational = not isinstance(prompts[0], str)
            completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
            columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
            for i, f in enumerate(self.reward_funcs):
                name = getattr(f, "__name__", repr(f))
                got = f(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
                if isinstance(got, (str, bytes)) or not hasattr(got, "__len__"):
                    raise ValueError(f"reward function {name} returned {type(got).__name__}; it must return one "
                                     f"score per completion (a list of {len(texts)} floats)")
                if len(got) != len(texts):
                    raise ValueError(f"reward function {name} returned {len(got)} scores for {len(texts)} "
                                     "completions; return exactly one per completion (None where it does not apply)")
                vals = torch.tensor([math.nan if g is None else float(g) for g in got], device=dev)
                if torch.isinf(vals).any() or (torch.isnan(vals) & torch.tensor([g is not None for g in got],
                                                                               device=dev)).any():
                    raise ValueError(f"reward function {name} returned non-finite scores (nan or inf); "
                                     "return finite floats, or None where it does not apply")
                parts[name if name not in parts else f"{name}_{i}"] = vals
        return parts

    def combine(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reward: the reward model's score plus the reward functions' scores, weighted by
        ``config.reward_weights`` (a None of one function is skipped; of every function, an error)."""
        funcs = [v for k, v in parts.items() if k != "reward_model"]
        total = parts["reward_model"].clone() if "reward_model" in parts else torch.zeros_like(funcs[0])
        if funcs:
            weights = self.config.reward_weights or [1.0] * len(funcs)
            stacked = torch.stack([w * v for w, v in zip(weights, funcs)])
            if torch.isnan(stacked).all(dim=0).any():
                raise ValueError("every reward function returned None for some completion; at least one must score it")
            total += torch.nansum(stacked, dim=0)
        return total

    def score(self, rows: list[dict], texts: list[str], completion_ids: list[list[int]] | None = None) -> torch.Tensor:
        """The reward of each response (:meth:`combine` of :meth:`score_parts`)."""
        return self.combine(self.score_parts(rows, texts, completion_ids))

    @torch.no_grad()
    def calibrate_scores(self, n: int | None = None) -> tuple[float, float]:
        """Measure the reward's mean and std on ``n`` samples of the current policy and rescale to (0, 1)."""
        n = n or max(self.config.batch_size, 64)
        scores = torch.cat([self.rollout(self._next_rows(self.config.batch_size)).raw_scores
                            for _ in range(math.ceil(n / self.config.batch_size))])
        scores = self.accelerator.gather(scores)
        self.score_shift, self.score_scale = float(scores.mean()), float(scores.std().clamp(min=1e-6))
        self._cursor = 0
        self._scale_critic()
        return self.score_shift, self.score_scale

    def _scale_critic(self) -> None:
        """Put a separate critic on the scale of the normalized scores it learns to predict.

        DECISION: a critic copied from the reward model (InstructGPT's choice) predicts raw reward-model
        scores. Once the scores are normalized to mean 0, std 1, that is several units off its targets;
        value clipping lets it close only ``cliprange_value`` per update, so for a whole short run GAE's
        advantages would be the critic's error rather than the reward. Huang et al. normalize the
        reward model's head, which the critic inherits; this applies the same shift and scale to the
        critic's output. A zero-initialized value head starts at 0 and needs nothing; without a reward
        model the critic cannot be its copy, and is left as given.
        """
        model = self.accelerator.unwrap_model(self.model)
        if model.value_model is not None and self.reward_model is not None:
            model.value_shift, model.value_scale = self.score_shift, self.score_scale

    # ----------------------------------------------------------------- update
    def update_with_oom_retry(self, batch: Rollout) -> dict:
        """:meth:`update`; a GPU out-of-memory before its first optimizer step is retried with half
        the micro-batch and twice the gradient accumulation (the same minibatch), saying so."""
        from companion.training import _is_oom

        while True:
            generator_state = self._generator.get_state()
            self._stepped = False
            try:
                return self.update(batch)
            except BaseException as e:
                if not _is_oom(e):
                    raise
                self.optimizer.zero_grad()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                cfg = self.config
                if self._stepped or cfg.micro_batch_size < 2 or cfg.mini_batch_size % (cfg.gradient_accumulation_steps * 2):
                    raise RuntimeError(
                        f"out of GPU memory in the PPO update at micro-batch {cfg.micro_batch_size} "
                        f"(gradient_accumulation_steps={cfg.gradient_accumulation_steps})"
                        + (" after an optimizer step" if self._stepped else "")
                        + ": lower batch_size or max_new_tokens, raise gradient_accumulation_steps, or use LoRA"
                    ) from e
                self.config = replace(cfg, gradient_accumulation_steps=cfg.gradient_accumulation_steps * 2)
                self._generator.set_state(generator_state)
                print(f"out of GPU memory at PPO micro-batch {cfg.micro_batch_size}: retrying with "
                      f"{self.config.micro_batch_size} x {self.config.gradient_accumulation_steps} accumulation "
                      "steps (the same minibatch)", file=sys.stderr)

    def update(self, batch: Rollout) -> dict:
        """Shape rewards, estimate advantages, and run ``num_ppo_epochs`` of clipped updates."""
        cfg, acc = self.config, self.accelerator
        m = batch.mask
        kl = kl_penalty(batch.logprobs, batch.ref_logprobs, cfg.kl_estimator) * m
        rewards, non_score = shaped_rewards(batch.scores, kl, m, self.kl_coef)
        # several processes: whiten over the global batch (each process holds batch_size of it), as one process would
        all_sum = (lambda t: acc.reduce(t, reduction="sum")) if acc.num_processes > 1 else None
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, m, shift_mean=False, all_sum=all_sum)
        advantages, returns = advantages_and_returns(rewards, batch.values, m, cfg.gamma, cfg.lam, all_sum=all_sum)

        context = batch.queries.shape[1]
        full = torch.cat([batch.queries, batch.responses], dim=1)
        attn = torch.cat([(batch.queries != self.tokenizer.pad_token_id).long(), m.long()], dim=1)
        position_ids = (attn.cumsum(1) - 1).clamp(min=0)
        stats = {k: [] for k in ("pg_loss", "vf_loss", "pg_clipfrac", "vf_clipfrac", "approxkl", "ratio", "entropy")}
        self.model.train()
        n = len(batch.scores)
        for _ in range(cfg.num_ppo_epochs):
            order = torch.randperm(n, generator=self._generator)
            for start in range(0, n, cfg.mini_batch_size):
                mini = order[start:start + cfg.mini_batch_size]
                self.optimizer.zero_grad()
                for micro in mini.split(cfg.micro_batch_size):
                    logits, vpred = self.model(full[micro], attn[micro], position_ids[micro])
                    new_logprobs = response_logprobs(logits, batch.responses[micro], context, cfg.temperature)
                    vpred = vpred[:, context - 1:-1].float()
                    mm = m[micro]
                    pg, pg_stats = policy_loss(new_logprobs, batch.logprobs[micro], advantages[micro], mm,
                                               cfg.cliprange)
                    vf, vf_stats = value_loss(vpred, batch.values[micro], returns[micro], mm, cfg.cliprange_value)
                    loss = (pg + cfg.vf_coef * vf) / cfg.gradient_accumulation_steps
                    acc.backward(loss)
                    with torch.no_grad():
                        lg = logits[:, context - 1:-1].float() / cfg.temperature
                        ent = torch.logsumexp(lg, -1) - (F.softmax(lg, -1) * lg).sum(-1)
                    for k, v in (("pg_loss", pg), ("vf_loss", vf), ("pg_clipfrac", pg_stats["clipfrac"]),
                                 ("vf_clipfrac", vf_stats["clipfrac"]), ("approxkl", pg_stats["approxkl"]),
                                 ("ratio", pg_stats["ratio"]), ("entropy", masked_mean(ent, mm))):
                        stats[k].append(float(v.detach()))
                if cfg.max_grad_norm:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self._stepped = True
        self.model.eval()
        stats = {k: self._pooled(v) for k, v in stats.items()}  # every process ran as many micro-batches

        def mean(x: torch.Tensor) -> float:
            return float(acc.gather(x.detach().float().reshape(-1)).mean())

        metrics = {
            "objective/kl": mean(kl.sum(1)),
            "objective/entropy": mean((-batch.logprobs * m).sum(1)),
            "objective/non_score_reward": mean(non_score.sum(1)),
            "objective/rlhf_reward": mean(non_score.sum(1) + batch.scores),
            "objective/scores": mean(batch.scores),
            "objective/raw_scores": mean(batch.raw_scores),
            **{f"rewards/{k}": float(torch.nanmean(acc.gather(v.float().reshape(-1)))) for k, v in batch.parts.items()},
            "policy/approxkl_avg": float(np.mean(stats["approxkl"])),
            "policy/clipfrac_avg": float(np.mean(stats["pg_clipfrac"])),
            "policy/entropy_avg": float(np.mean(stats["entropy"])),
            "loss/policy_avg": float(np.mean(stats["pg_loss"])),
            "loss/value_avg": float(np.mean(stats["vf_loss"])),
            "val/clipfrac_avg": float(np.mean(stats["vf_clipfrac"])),
            "val/ratio": float(np.mean(stats["ratio"])),
            "val/ratio_var": float(np.var(stats["ratio"])),
            "val/num_eos_tokens": float(acc.gather(batch.contains_eos.long()).sum()),
            "val/length": mean(m.sum(1)),
            "objective/kl_coef": float(self.kl_coef),
        }
        if self.kl_ctl is not None:
            self.kl_coef = self.kl_ctl.update(metrics["objective/kl"], n * acc.num_processes)
        return metrics

    # ----------------------------------------------------------------- the loop
    def train(self, steps: int | None = None, callback: Callable[[PPOTrainer, dict], dict | None] | None = None,
              progress: bool = True, resume_from_checkpoint: str | Path | bool | None = None) -> dict[str, list]:
        """Run PPO iterations; returns the history.

        ``steps`` more iterations, or (default) until ``config.steps`` in all.
        ``resume_from_checkpoint``: a checkpoint folder, or True for the latest one in
        ``config.output_dir`` (none there: start from the beginning).  ``callback(trainer, metrics)``
        runs after every step and may return more metrics to log (e.g. a held-out evaluation).
        """
        from tqdm.auto import tqdm

        if steps is not None:
            steps = validation.integer("steps (None: until config.steps)", steps, minimum=0)
        cfg = self.config
        if resume_from_checkpoint:
            path = (latest_checkpoint(cfg.output_dir) if resume_from_checkpoint is True
                    else Path(resume_from_checkpoint))
            if path is not None:
                self.load_checkpoint(path)
        if cfg.normalize_scores and self.step == 0 and self.score_scale == 1.0 and self.score_shift == 0.0:
            self.calibrate_scores()
        steps = max(0, cfg.steps - self.step) if steps is None else steps
        bar = tqdm(range(steps), desc="PPO", disable=not progress or not self.accelerator.is_main_process)
        for _ in bar:
            t0 = time.time()
            batch = self.rollout(self._next_rows(cfg.batch_size))
            t1 = time.time()
            metrics = self.update_with_oom_retry(batch)
            metrics["time/rollout_s"], metrics["time/update_s"] = t1 - t0, time.time() - t1
            if self.judge is not None:
                gold = self._pooled([float(x) for x in self.judge(batch.rows, batch.texts)])
                metrics["gold/score"] = float(np.mean(gold))
                metrics["gold/success"] = float(np.mean([g >= 1.0 for g in gold]))
            self.step += 1
            metrics["step"] = self.step
            if callback is not None:
                metrics.update(callback(self, metrics) or {})
            for k, v in metrics.items():
                self.history.setdefault(k, []).append(v)
            self.history.setdefault("samples", []).append(batch.texts[:3])
            bar.set_postfix(score=f"{metrics['objective/scores']:.2f}", kl=f"{metrics['objective/kl']:.1f}")
            if cfg.save_steps and self.step % cfg.save_steps == 0:
                self.save_checkpoint(Path(cfg.output_dir) / f"checkpoint-{self.step}")
        return self.history

    # ----------------------------------------------------------------- checkpoints
    def save_checkpoint(self, path: str | Path) -> Path:
        """Save policy, critic, optimizer and trainer state to ``path`` (resume with :meth:`load_checkpoint`)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        if self.accelerator.is_main_process:
            model.policy.save_pretrained(path / "policy")
            self.tokenizer.save_pretrained(path / "policy")
            critic = model.value_head if model.value_head is not None else model.value_model
            torch.save({"critic": critic.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "generator": self._generator.get_state(), "torch_rng": torch.get_rng_state()},
                       path / "ppo_state.pt")
            state = {"step": self.step, "kl_coef": self.kl_coef, "score_shift": self.score_shift,
                     "score_scale": self.score_scale, "cursor": self._cursor, "config": asdict(self.config),
                     "history": self.history}
            tmp = path / "trainer_state.json.tmp"  # written last and renamed: a checkpoint with it is complete
            tmp.write_text(json.dumps(state, default=float))
            tmp.replace(path / "trainer_state.json")
        self.accelerator.wait_for_everyone()  # no process reads the checkpoint before it is complete
        return path

    def load_checkpoint(self, path: str | Path) -> None:
        """Restore what :meth:`save_checkpoint` wrote into this trainer's (same-shaped) models."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / "trainer_state.json").exists():
            raise FileNotFoundError(f"{path} holds no PPO checkpoint (no trainer_state.json); "
                                    "pass a folder written by PPOTrainer.save_checkpoint")
        model = self.accelerator.unwrap_model(self.model)
        weights = path / "policy" / "model.safetensors"
        if weights.exists():
            model.policy.load_state_dict(load_file(weights), strict=False)
        else:  # a PEFT adapter
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(model.policy, load_file(path / "policy" / "adapter_model.safetensors"))
        saved = torch.load(path / "ppo_state.pt", weights_only=False)
        critic = model.value_head if model.value_head is not None else model.value_model
        critic.load_state_dict(saved["critic"])
        self.optimizer.load_state_dict(saved["optimizer"])
        state = json.loads((path / "trainer_state.json").read_text())
        self.step, self.kl_coef = state["step"], state["kl_coef"]
        self.score_shift, self.score_scale, self._cursor = state["score_shift"], state["score_scale"], state["cursor"]
        self.history = state["history"]
        self._scale_critic()
        if "generator" in saved:
            self._generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
        if self.kl_ctl is not None:
            self.kl_ctl.value = self.kl_coef


def latest_checkpoint(output_dir: str | Path | None) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder in ``output_dir`` (None if there is none)."""
    if output_dir is None or not Path(output_dir).is_dir():
        return None
    done = [d for d in Path(output_dir).glob("checkpoint-*")
            if d.name.split("-")[-1].isdigit() and (d / "trainer_state.json").is_file()]
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)

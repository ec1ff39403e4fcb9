"""REINFORCE for a language model: a response is an episode, each token an action.

The state is the prompt plus the tokens written so far, the action is the next token, and
the reward arrives once, at the end, from a program that reads the finished text.  With a
group of ``n`` responses to the same prompt the update is

    loss = - mean_i (R_i - b) * sum_t log pi(y_{i,t} | x, y_{i,<t})

where ``b`` is the group's mean reward (the baseline of the CartPole section).  Nothing
keeps the policy close to where it started, so :func:`reinforce_lm` also *measures* how
far it drifts: the KL divergence to a frozen copy of the initial model, and the diversity
of what it writes.  Chapter 7 turns that measurement into a penalty.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from companion import validation
from companion.sampling import encode_prompt


# --------------------------------------------------------------------------- rewards
def keyword_reward(words: Sequence[str], per_hit: float = 1.0) -> Callable[[list[str]], list[float]]:
    """A programmatic reward: ``per_hit`` for every whole-word, case-insensitive occurrence of ``words``.

    >>> keyword_reward(["happy"])(["Happy dog, happy cat.", "sad"])
    [2.0, 0.0]
    """
    words = [w.strip().lower() for w in validation.text_list("words", words) if w.strip()]
    per_hit = validation.number("per_hit", per_hit)
    if not words:
        raise ValueError("keyword_reward needs at least one non-empty target word, e.g. ['happy']")
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)

    def reward(texts: list[str]) -> list[float]:
        return [per_hit * len(pattern.findall(t)) for t in texts]

    return reward


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (1.0 = no repetition, 0 = none).

    >>> distinct_n(["a b a b"], n=2)   # bigrams: (a b), (b a), (a b)
    0.6666666666666666
    """
    texts = validation.text_list("texts", texts, allow_empty=True)
    n = validation.integer("n", n, minimum=1)
    grams = []
    for t in texts:
        w = t.lower().split()
        grams += [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


# --------------------------------------------------------------------------- episodes
def response_mask(responses: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """1 for response tokens up to and including the first stop token, 0 after it.

    >>> response_mask(torch.tensor([[5, 9, 7, 7]]), stop_ids=[9]).tolist()
    [[1, 1, 0, 0]]
    """
    is_stop = torch.isin(responses, torch.tensor(list(stop_ids), device=responses.device)).long()
    stopped_before = (is_stop.cumsum(dim=1) - is_stop) > 0
    return (~stopped_before).long()


@torch.no_grad()
def sample_group(model, prompt_ids: Sequence[int], n: int, max_new_tokens: int, stop_ids: Sequence[int],
                 temperature: float = 1.0, pad_id: int = 0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sampled responses to one prompt: ``(tokens (n, T), mask (n, T))``."""
    n = validation.integer("n", n, minimum=1)
    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=1)
    temperature = validation.number("temperature (> 0 for sampling)", temperature, above=0.0)
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt_ids)] * n, device=device)
    stops = torch.tensor(list(stop_ids), device=device)
    out = model(input_ids=ids, use_cache=True)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    tokens = []
    for _ in range(max_new_tokens):
        probs = F.softmax(out.logits[:, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id), nxt)
        tokens.append(nxt)
        finished |= torch.isin(nxt, stops)
        if bool(finished.all()):
            break
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True)
    responses = torch.stack(tokens, dim=1)
    return responses, response_mask(responses, stop_ids)


def response_logits(model, prompt_ids: Sequence[int], responses: torch.Tensor) -> torch.Tensor:
    """Logits that predicted each response token: shape (n, T, vocab)."""
    n, t = responses.shape
    prompt = torch.tensor([list(prompt_ids)] * n, device=responses.device)
    logits = model(input_ids=torch.cat([prompt, responses], dim=1)).logits
    p = prompt.shape[1]
    return logits[:, p - 1: p - 1 + t].float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token) at every position, shape (n, T)."""
    return torch.gather(F.log_softmax(logits, dim=-1), 2, tokens[..., None]).squeeze(-1)


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact KL(pi || pi_ref) of the next-token distributions at every position, shape (n, T)."""
    logp, logq = F.log_softmax(logits, dim=-1), F.log_softmax(ref_logits, dim=-1)
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def reinforce_loss(logprobs: torch.Tensor, mask: torch.Tensor, rewards: torch.Tensor,
                   baseline: bool = True) -> torch.Tensor:
    """- mean_i (R_i - b) * sum_t log pi(y_it), with b = mean(R) when ``baseline``.

    >>> lp = torch.log(torch.tensor([[0.5, 0.5], [0.25, 1.0]]))
    >>> round(float(reinforce_loss(lp, torch.ones(2, 2), torch.tensor([1.0, 0.0]), baseline=False)), 4)
    0.6931
    """
    if logprobs.shape != mask.shape or rewards.shape != logprobs.shape[:1]:
        raise ValueError(
            f"logprobs {tuple(logprobs.shape)} and mask {tuple(mask.shape)} must match, and rewards "
            f"{tuple(rewards.shape)} must have one entry per response"
        )
    adv = rewards - rewards.mean() if baseline else rewards
    seq_logp = (logprobs * mask).sum(dim=1)
    return -(adv.detach() * seq_logp).mean()


# --------------------------------------------------------------------------- the loop
@dataclass
class LMReinforceConfig:
    """Settings of :func:`reinforce_lm`.  ``kl_coef`` > 0 previews chapter 7's penalty."""

    steps: int = 40
    group_size: int = 16
    max_new_tokens: int = 24
    learning_rate: float = 1e-3
    temperature: float = 1.0
    baseline: bool = True
    kl_coef: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        self.steps = validation.integer("steps", self.steps, minimum=1)
        self.group_size = validation.integer("group_size (the baseline needs a group)", self.group_size, minimum=2)
        self.max_new_tokens = validation.integer("max_new_tokens", self.max_new_tokens, minimum=1)
        self.learning_rate = validation.number("learning_rate", self.learning_rate, above=0.0)
        self.temperature = validation.number("temperature", self.temperature, above=0.0)
        self.kl_coef = validation.number("kl_coef", self.kl_coef, minimum=0.0)
        self.max_grad_norm = validation.number("max_grad_norm", self.max_grad_norm, above=0.0)


def reinforce_lm(model, tokenizer, prompts: Sequence, reward_fn: Callable[[list[str]], list[float]],
                 cfg: LMReinforceConfig, stop_ids: Sequence[int] | None = None,
                 progress: bool = True) -> dict:
    """Fine-tune ``model`` in place with REINFORCE on ``reward_fn``; returns the history.

    Each step takes the next prompt (cycling), samples ``group_size`` responses, scores
    them, and takes one gradient step.  History (one entry per step): ``reward``,
    ``kl`` (summed over response tokens, mean over the group, vs the initial model),
    ``distinct2``, ``length``, ``entropy`` (mean per-token entropy), ``samples`` (first 3).
    With ``kl_coef`` > 0 the per-response reward is reduced by ``kl_coef * KL``.
    """
    prompts = validation.prompt_list("prompts", prompts)
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be a function texts -> scores, got {type(reward_fn).__name__}")
    stops = list(stop_ids) if stop_ids is not None else [tokenizer.eos_token_id]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    gen = torch.Generator().manual_seed(cfg.seed)
    history = {k: [] for k in ("reward", "kl", "distinct2", "length", "entropy", "samples")}
    steps = range(cfg.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="REINFORCE on the LM")
    for step in steps:
        prompt_ids = encoded[step % len(encoded)]
        model.eval()
        responses, mask = sample_group(model, prompt_ids, cfg.group_size, cfg.max_new_tokens, stops,
                                       cfg.temperature, pad_id, gen)
        texts = [tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True)
                 for r, m in zip(responses, mask)]
        rewards = torch.tensor(validation.scores("reward_fn", reward_fn(texts), len(texts)), dtype=torch.float,
                               device=responses.device)
        model.train()
        logits = response_logits(model, prompt_ids, responses)
        with torch.no_grad():
            ref_logits = response_logits(reference, prompt_ids, responses)
            kl = (token_kl(logits, ref_logits) * mask).sum(dim=1)
            logp_all = F.log_softmax(logits, dim=-1)
            ent = -(logp_all.exp() * logp_all).sum(-1)
            ent = float((ent * mask).sum() / mask.sum())
        shaped = rewards - cfg.kl_coef * kl
        loss = reinforce_loss(token_logprobs(logits, responses), mask, shaped, cfg.baseline)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        history["reward"].append(float(rewards.mean()))
        history["kl"].append(float(kl.mean()))
        history["distinct2"].append(distinct_n(texts, 2))
        history["length"].append(float(mask.sum(dim=1).float().mean()))
        history["entropy"].append(ent)
        history["samples"].append(texts[:3])
        if progress:
            steps.set_postfix(reward=f"{history['reward'][-1]:.2f}", kl=f"{history['kl'][-1]:.1f}")
    model.eval()
    return history

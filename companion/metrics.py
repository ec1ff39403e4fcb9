"""Diversity and repetition of generated text.

``distinct_n`` (Li et al., 2016) is the fraction of n-grams across a set of texts that are
unique: 1.0 means no n-gram is ever repeated, values near 0 mean the texts say the same
thing over and over.  ``repetition_rate`` looks inside each text: the fraction of its
n-grams that already appeared earlier in the same text (loops such as "and the cat and the
cat ..." score high).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Tokenize = Callable[[str], list[str]]


def _tokens(text: str | Sequence[str], tokenize: Tokenize) -> list:
    return tokenize(text) if isinstance(text, str) else list(text)


def _ngrams(tokens: Sequence, n: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str | Sequence[str]], n: int = 2, tokenize: Tokenize = str.split) -> float:
    """Unique n-grams / all n-grams, pooled over ``texts`` (0 when there are no n-grams)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for t in texts for g in _ngrams(_tokens(t, tokenize), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: Sequence[str | Sequence[str]], n: int = 3, tokenize: Tokenize = str.split) -> float:
    """Share of n-grams that repeat an earlier n-gram of the same text, pooled over ``texts``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    repeats = total = 0
    for t in texts:
        seen: set = set()
        for g in _ngrams(_tokens(t, tokenize), n):
            repeats += g in seen
            seen.add(g)
            total += 1
    return repeats / total if total else 0.0

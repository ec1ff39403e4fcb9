"""Count-based n-gram language models: the Markov assumption in a few dictionaries.

An n-gram model predicts the next token from the previous ``n - 1`` tokens only:

    P(w_t | w_1 .. w_{t-1})  ≈  P(w_t | w_{t-n+1} .. w_{t-1})  =  C(context, w_t) / C(context)

where ``C`` counts occurrences in the training text.  Add-k smoothing,
``(C(context, w) + k) / (C(context) + k * V)``, gives unseen pairs a small probability so
held-out perplexity stays finite.  Tokens can be anything hashable: words in the tests,
BPE token ids in the book.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence

Token = Hashable


class NGramLM:
    """An n-gram LM with add-k smoothing.

    Args:
        n: order (1 = unigram, 2 = bigram, 3 = trigram, ...).
        k: add-k smoothing constant (0 = maximum likelihood, the plain ratio of counts).
        bos, eos: boundary symbols; each sequence is padded with ``n - 1`` ``bos`` on the
            left and one ``eos`` on the right (the model learns where texts end).
        vocab_size: size V of the vocabulary for smoothing; default: the distinct tokens seen
            in training plus ``eos`` plus one slot for unknown tokens.
    """

    def __init__(self, n: int, k: float = 0.0, bos: Token = "<s>", eos: Token = "</s>",
                 vocab_size: int | None = None):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1 (1 = unigram, 2 = bigram, ...), got {n!r}")
        if k < 0:
            raise ValueError(f"smoothing k must be >= 0, got {k!r}")
        self.n, self.k, self.bos, self.eos = n, float(k), bos, eos
        self._vocab_size = vocab_size
        self.counts: dict[tuple, Counter] = defaultdict(Counter)  # context -> next-token counts
        self.context_totals: Counter = Counter()
        self.vocab: set = set()

    # ------------------------------------------------------------------ training
    def _padded(self, seq: Sequence[Token]) -> list[Token]:
        return [self.bos] * (self.n - 1) + list(seq) + [self.eos]

    def fit(self, sequences: Iterable[Sequence[Token]]) -> NGramLM:
        """Count every (context, next token) pair in ``sequences`` (lists of tokens)."""
        seen_any = False
        for seq in sequences:
            if isinstance(seq, str):
                raise ValueError("fit() takes sequences of tokens (e.g. text.split()), not raw strings")
            seen_any = True
            padded = self._padded(seq)
            self.vocab.update(seq)
            for i in range(self.n - 1, len(padded)):
                context = tuple(padded[i - self.n + 1:i])
                self.counts[context][padded[i]] += 1
                self.context_totals[context] += 1
        if not seen_any:
            raise ValueError("fit() got no sequences: pass a non-empty list of token lists")
        self.vocab.add(self.eos)
        return self

    @property
    def vocab_size(self) -> int:
        return self._vocab_size or len(self.vocab) + 1  # +1: an <unk> slot

    def _context(self, context: Sequence[Token]) -> tuple:
        context = [self.bos] * (self.n - 1) + list(context)
        return tuple(context[len(context) - self.n + 1:]) if self.n > 1 else ()

    # ------------------------------------------------------------------ probabilities
    def has_context(self, context: Sequence[Token]) -> bool:
        """Whether the last ``n - 1`` tokens of ``context`` occurred in training."""
        return self.context_totals.get(self._context(context), 0) > 0

    def count(self, context: Sequence[Token], token: Token) -> int:
        """C(context, token) for the last ``n - 1`` tokens of ``context``."""
        return self.counts.get(self._context(context), Counter())[token]

    def prob(self, token: Token, context: Sequence[Token] = ()) -> float:
        """P(token | last n-1 tokens of context), add-k smoothed.

        With ``k = 0`` and an unseen context the probability is undefined; we return 0.
        """
        if not self.context_totals:
            raise ValueError("The model is empty: call fit() first")
        ctx = self._context(context)
        num = self.counts.get(ctx, Counter())[token] + self.k
        den = self.context_totals.get(ctx, 0) + self.k * self.vocab_size
        return num / den if den > 0 else 0.0

    def distribution(self, context: Sequence[Token] = ()) -> dict[Token, float]:
        """P(· | context) over the training vocabulary (the <unk> slot is left out)."""
        return {w: self.prob(w, context) for w in self.vocab}

    def log_likelihood(self, seq: Sequence[Token]) -> tuple[float, int]:
        """(sum of natural-log probabilities, number of predicted tokens) for one sequence."""
        padded = self._padded(seq)
        total, count = 0.0, 0
        for i in range(self.n - 1, len(padded)):
            p = self.prob(padded[i], padded[max(0, i - self.n + 1):i])
            total += math.log(p) if p > 0 else -math.inf
            count += 1
        return total, count

    def perplexity(self, sequences: Iterable[Sequence[Token]]) -> float:
        """exp(average negative log-likelihood per token), ``eos`` included.  Lower is better.

        Infinite when some held-out token has probability 0 (try ``k > 0``).
        """
        total, count = 0.0, 0
        for seq in sequences:
            ll, c = self.log_likelihood(seq)
            total, count = total + ll, count + c
        if count == 0:
            raise ValueError("perplexity() got no tokens to score")
        return math.exp(-total / count) if total > -math.inf else math.inf

    # ------------------------------------------------------------------ generation
    def sample(self, max_tokens: int = 30, prefix: Sequence[Token] = (), seed: int | None = None,
               temperature: float = 1.0) -> list[Token]:
        """Sample tokens after ``prefix`` until ``eos`` or ``max_tokens``.

        Sampling uses the raw counts (no smoothing, which would mostly pick random tokens);
        when a context was never seen it backs off to the longest shorter one that was.
        ``temperature`` rescales the counts as ``C ** (1 / T)``.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {temperature!r}")
        if not self.context_totals:
            raise ValueError("The model is empty: call fit() first")
        rng = random.Random(seed)
        out = list(prefix)
        history = [self.bos] * (self.n - 1) + list(prefix)
        for _ in range(max_tokens):
            counts = self._backoff_counts(history)
            tokens = list(counts)
            weights = [counts[t] ** (1.0 / temperature) for t in tokens]
            token = rng.choices(tokens, weights=weights)[0]
            if token == self.eos:
                break
            out.append(token)
            history.append(token)
        return out

    def _backoff_counts(self, history: Sequence[Token]) -> Counter:
        for order in range(self.n - 1, -1, -1):
            ctx = tuple(history[len(history) - order:]) if order else ()
            if self.counts.get(ctx):
                return self.counts[ctx]
        return Counter({self.eos: 1})  # pragma: no cover - unigram counts always exist

    def __repr__(self) -> str:
        return (f"NGramLM(n={self.n}, k={self.k}, contexts={len(self.counts):,}, "
                f"vocab={self.vocab_size:,})")


class InterpolatedLM:
    """Linear interpolation of n-gram models (Jelinek-Mercer smoothing).

    ``P(w | ctx) = sum_i weights[i] * P_i(w | ctx)``: the trigram speaks when it has seen the
    context, and the bigram and unigram fill in when it has not.  The weights must sum to 1.
    """

    def __init__(self, models: Sequence[NGramLM], weights: Sequence[float]):
        if len(models) != len(weights) or not models:
            raise ValueError("InterpolatedLM needs one weight per model (and at least one model)")
        if any(w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
            raise ValueError(f"interpolation weights must be >= 0 and sum to 1, got {list(weights)}")
        self.models, self.weights = list(models), list(weights)
        self.n = max(m.n for m in models)
        self.bos, self.eos = models[0].bos, models[0].eos

    def prob(self, token: Token, context: Sequence[Token] = ()) -> float:
        """Weighted sum over the models that have seen this context (weights renormalized)."""
        total, used = 0.0, 0.0
        for m, w in zip(self.models, self.weights):
            if m.k > 0 or m.has_context(context):
                total, used = total + w * m.prob(token, context), used + w
        return total / used if used > 0 else 0.0

    _padded = NGramLM._padded
    log_likelihood = NGramLM.log_likelihood
    perplexity = NGramLM.perplexity

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:g}*{m.n}-gram" for m, w in zip(self.models, self.weights))
        return f"InterpolatedLM({parts})"


def count_ngrams(tokens: Sequence[Token], n: int) -> Counter:
    """Counts of every n-gram (as a tuple) in one token sequence."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))

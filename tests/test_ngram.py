"""n-gram counts, probabilities, perplexity and sampling on a corpus small enough to check by hand."""

from __future__ import annotations

import math

import pytest
import torch

from companion.neural_lm import MLPLanguageModel, MLPLMConfig, make_windows, mlp_perplexity
from companion.ngram import InterpolatedLM, NGramLM, count_ngrams

# <s> the cat sat </s> / <s> the cat ran </s> / <s> the dog sat </s>
CORPUS = [["the", "cat", "sat"], ["the", "cat", "ran"], ["the", "dog", "sat"]]


def test_count_ngrams():
    assert count_ngrams(["a", "b", "a", "b"], 2) == {("a", "b"): 2, ("b", "a"): 1}
    assert sum(count_ngrams(["a", "b", "c"], 1).values()) == 3


def test_bigram_counts_and_mle_probabilities():
    lm = NGramLM(2).fit(CORPUS)
    assert lm.count(["the"], "cat") == 2
    assert lm.count(["the"], "dog") == 1
    # P(A|B) = C(B, A) / C(B)
    assert lm.prob("cat", ["the"]) == pytest.approx(2 / 3)
    assert lm.prob("sat", ["cat"]) == pytest.approx(1 / 2)
    assert lm.prob("the", []) == 1.0  # every sentence starts with "the"
    assert lm.prob("</s>", ["sat"]) == 1.0
    assert lm.prob("dog", ["cat"]) == 0.0
    assert sum(lm.distribution(["the"]).values()) == pytest.approx(1.0)


def test_unigram_and_trigram():
    uni = NGramLM(1).fit(CORPUS)
    # 12 tokens including three </s>; "the" occurs 3 times
    assert uni.prob("the") == pytest.approx(3 / 12)
    assert uni.prob("cat", ["whatever"]) == pytest.approx(2 / 12)  # context is ignored
    tri = NGramLM(3).fit(CORPUS)
    assert tri.prob("sat", ["the", "cat"]) == pytest.approx(1 / 2)
    assert tri.prob("sat", ["the", "dog"]) == 1.0
    assert tri.prob("cat", ["the"]) == pytest.approx(2 / 3)  # context <s> the


def test_add_k_smoothing():
    lm = NGramLM(2, k=1.0).fit(CORPUS)
    V = lm.vocab_size  # the, cat, dog, sat, ran, </s> + <unk> = 7
    assert V == 7
    assert lm.prob("cat", ["the"]) == pytest.approx((2 + 1) / (3 + 7))
    assert lm.prob("dog", ["cat"]) == pytest.approx(1 / (2 + 7))
    assert lm.prob("zebra", ["unseen"]) == pytest.approx(1 / 7)


def test_perplexity_by_hand():
    lm = NGramLM(2).fit(CORPUS)
    # "the cat sat </s>": 1 * 2/3 * 1/2 * 1 -> perplexity (1/3) ** (-1/4)
    assert lm.perplexity([["the", "cat", "sat"]]) == pytest.approx(3 ** 0.25)
    assert lm.perplexity([["the", "dog", "ran"]]) == math.inf  # "dog ran" never seen
    assert math.isfinite(NGramLM(2, k=0.1).fit(CORPUS).perplexity([["the", "dog", "ran"]]))


def test_interpolation_renormalizes_over_seen_contexts():
    uni, bi = NGramLM(1).fit(CORPUS), NGramLM(2).fit(CORPUS)
    mix = InterpolatedLM([uni, bi], [0.5, 0.5])
    assert mix.prob("cat", ["the"]) == pytest.approx(0.5 * 2 / 12 + 0.5 * 2 / 3)
    assert mix.prob("cat", ["zebra"]) == pytest.approx(2 / 12)  # bigram never saw "zebra": unigram only
    assert math.isfinite(mix.perplexity([["the", "dog", "ran"]]))
    with pytest.raises(ValueError, match="sum to 1"):
        InterpolatedLM([uni, bi], [0.5, 0.6])


def test_sampling_follows_counts_and_is_reproducible():
    lm = NGramLM(2).fit(CORPUS)
    a = lm.sample(seed=1)
    assert a == lm.sample(seed=1)
    assert a[0] == "the" and len(a) == 3
    firsts = {tuple(lm.sample(seed=s)[:2]) for s in range(50)}
    assert firsts == {("the", "cat"), ("the", "dog")}


def test_bad_input():
    with pytest.raises(ValueError, match="n must be"):
        NGramLM(0)
    with pytest.raises(ValueError, match="raw strings"):
        NGramLM(2).fit(["the cat sat"])
    with pytest.raises(ValueError, match="fit"):
        NGramLM(2).prob("a", ["b"])


def test_mlp_windows_match_ngram_padding():
    X, Y = make_windows([[5, 6, 7]], context=2, bos_id=0, eos_id=1)
    assert X.tolist() == [[0, 0], [0, 5], [5, 6], [6, 7]]
    assert Y.tolist() == [5, 6, 7, 1]  # L + 1 predictions, like NGramLM(3)


def test_untrained_mlp_perplexity_is_about_vocab_size():
    torch.manual_seed(0)
    model = MLPLanguageModel(MLPLMConfig(vocab_size=50, context=2, embed_dim=8, hidden=16))
    X, Y = make_windows([[3, 4, 5, 6]] * 10, 2, 0, 1)
    assert 30 < mlp_perplexity(model, X, Y) < 80  # near-uniform guesses over 50 tokens
    with pytest.raises(ValueError, match="shape"):
        model(torch.zeros(4, 3, dtype=torch.long))

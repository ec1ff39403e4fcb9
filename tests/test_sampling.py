"""Sampling: temperature, top-k, top-p and the generation loop, on hand-checkable logits."""

from __future__ import annotations

import math

import pytest
import torch

from companion.sampling import (
    entropy,
    filter_logits,
    generate,
    greedy_token,
    next_token_probs,
    sample_token,
    stream_tokens,
    top_k_filter,
    top_p_filter,
)

LOGITS = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))  # softmax gives these back


def test_temperature_one_is_softmax():
    probs = next_token_probs(LOGITS, temperature=1.0)
    assert torch.allclose(probs, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=1e-6)
    raw = torch.tensor([2.0, 1.0, 0.0])
    assert torch.allclose(next_token_probs(raw), torch.softmax(raw, -1))


def test_temperature_zero_is_greedy():
    probs = next_token_probs([0.1, 3.0, 2.9], temperature=0)
    assert probs.tolist() == [0.0, 1.0, 0.0]
    assert greedy_token([0.1, 3.0, 2.9]) == 1
    assert all(sample_token([0.1, 3.0, 2.9], temperature=0) == 1 for _ in range(5))


def test_low_temperature_approaches_greedy_high_flattens():
    # p_i ∝ p_i^(1/T): at T = 0.5 the probabilities are squared and renormalized.
    half = next_token_probs(LOGITS, temperature=0.5)
    sq = torch.tensor([0.25, 0.09, 0.0225, 0.0025])
    assert torch.allclose(half, sq / sq.sum(), atol=1e-6)
    assert next_token_probs(LOGITS, temperature=0.01)[0] > 0.999
    hot = next_token_probs(LOGITS, temperature=100.0)
    assert torch.allclose(hot, torch.full((4,), 0.25), atol=0.01)
    assert entropy(next_token_probs(LOGITS, 0.5)) < entropy(next_token_probs(LOGITS, 1)) < entropy(hot)


def test_top_k_keeps_k_largest():
    probs = next_token_probs(LOGITS, top_k=2)
    assert (probs > 0).tolist() == [True, True, False, False]
    assert torch.allclose(probs[:2], torch.tensor([0.625, 0.375]), atol=1e-6)  # 0.5/0.8, 0.3/0.8
    assert torch.equal(top_k_filter(LOGITS, 10), LOGITS)  # k >= vocab: no-op


def test_top_p_keeps_smallest_nucleus():
    # cumulative: 0.5, 0.8, 0.95, 1.0
    assert (next_token_probs(LOGITS, top_p=0.5) > 0).tolist() == [True, False, False, False]
    assert (next_token_probs(LOGITS, top_p=0.6) > 0).tolist() == [True, True, False, False]
    assert (next_token_probs(LOGITS, top_p=0.8) > 0).tolist() == [True, True, False, False]
    assert (next_token_probs(LOGITS, top_p=0.9) > 0).tolist() == [True, True, True, False]
    assert (next_token_probs(LOGITS, top_p=0.01) > 0).sum() == 1  # the best token always survives
    # unsorted input: the support follows probability, not position
    shuffled = LOGITS[[2, 0, 3, 1]]
    assert (top_p_filter(shuffled, 0.6) > float("-inf")).tolist() == [False, True, False, True]


def test_filters_work_on_batches():
    batch = torch.stack([LOGITS, LOGITS.flip(0)])
    probs = next_token_probs(batch, top_k=1)
    assert probs.tolist() == [[1, 0, 0, 0], [0, 0, 0, 1]]
    assert greedy_token(batch).tolist() == [0, 3]


def test_sampling_frequencies_match_probabilities():
    g = torch.Generator().manual_seed(0)
    draws = [sample_token(LOGITS, generator=g) for _ in range(4000)]
    freq = torch.bincount(torch.tensor(draws), minlength=4) / 4000
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03)
    g = torch.Generator().manual_seed(0)
    assert {sample_token(LOGITS, top_k=2, generator=g) for _ in range(200)} == {0, 1}


@pytest.mark.parametrize("kwargs, word", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
])
def test_invalid_settings_raise_clear_errors(kwargs, word):
    with pytest.raises(ValueError, match=word):
        next_token_probs(LOGITS, **kwargs)


def test_entropy_of_uniform():
    assert math.isclose(entropy([0.25] * 4), math.log(4), rel_tol=1e-9)
    assert entropy([1.0, 0.0]) == 0.0


def test_filter_logits_order_temperature_then_topk():
    # Temperature does not change the ranking, so top-k picks the same support at any T.
    for t in (0.3, 1.0, 3.0):
        assert (filter_logits(LOGITS, t, top_k=3) > float("-inf")).tolist() == [True, True, True, False]


@pytest.fixture(scope="module")
def tiny_lm(small_tokenizer):
    from companion.models import build_causal_lm

    model = build_causal_lm(small_tokenizer, n_layer=1, n_embd=32, n_head=2, intermediate_size=64)
    return model, small_tokenizer


def test_generate_is_reproducible_and_greedy_is_deterministic(tiny_lm):
    model, tok = tiny_lm
    a = generate(model, tok, "Once upon", max_new_tokens=8, temperature=1.0, seed=3)
    b = generate(model, tok, "Once upon", max_new_tokens=8, temperature=1.0, seed=3)
    assert a == b
    g1 = generate(model, tok, "Once upon", max_new_tokens=8, temperature=0)
    g2 = generate(model, tok, "Once upon", max_new_tokens=8, temperature=0, seed=99)
    assert g1 == g2


def test_stream_tokens_concatenates_to_generate(tiny_lm):
    model, tok = tiny_lm
    pieces = list(stream_tokens(model, tok, "Lily found", max_new_tokens=6, temperature=0.8, seed=1))
    assert "".join(pieces) == generate(model, tok, "Lily found", max_new_tokens=6, temperature=0.8, seed=1)
    assert len(pieces) <= 6
    assert generate(model, tok, "Lily", max_new_tokens=0) == ""


def test_stream_tokens_accepts_chat_and_rejects_bad_prompts(tiny_lm):
    model, tok = tiny_lm
    out = generate(model, tok, [{"role": "user", "content": "Hi"}], max_new_tokens=4, temperature=0)
    assert isinstance(out, str)
    with pytest.raises(ValueError, match="prompt"):
        generate(model, tok, 42, max_new_tokens=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, tok, "Hi", max_new_tokens=-1)


def test_distribution_table_is_exact_for_listed_tokens():
    from companion.widgets.temperature import distribution_table

    logits = torch.tensor([0.0, 2.0, 1.0, -1.0, 0.5])
    table = distribution_table(logits, temperatures=(0.0, 1.0, 2.0), top_n=3)
    assert table["ids"] == [1, 2, 4]
    assert table["probs"][0] == [1.0, 0.0, 0.0] and table["rest"][0] == 0.0
    soft = torch.softmax(logits, -1)
    assert table["probs"][1] == pytest.approx(soft[[1, 2, 4]].tolist(), abs=1e-6)
    assert table["rest"][1] == pytest.approx(float(soft[[0, 3]].sum()), abs=1e-6)
    assert table["entropy"][0] == 0 < table["entropy"][1] < table["entropy"][2]
    with pytest.raises(ValueError, match="1-D"):
        distribution_table(logits[None], top_n=3)


def test_widget_renders_html(tiny_lm):
    from companion.widgets.temperature import temperature_widget, widget_data

    model, tok = tiny_lm
    data = widget_data(model, tok, ["Once upon"], temperatures=(0.0, 1.0), top_n=5,
                       sample_temperatures=(0.0, 1.0), n_samples=1, max_new_tokens=3)
    assert len(data["prompts"][0]["tokens"]) == 5 and set(data["prompts"][0]["samples"]) == {"0.0", "1.0"}
    html = temperature_widget(data).data
    assert "cw-t" in html and "Once upon" in html


def test_distinct_n_and_repetition():
    from companion.metrics import distinct_n, repetition_rate

    assert distinct_n(["a b c", "a b d"], n=1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], n=2) == pytest.approx(3 / 4)  # ab, bc, ab, bd
    assert repetition_rate(["a b a b a b"], n=2) == pytest.approx(3 / 5)  # ab ba [ab ba ab]
    assert repetition_rate(["a b c d"], n=2) == 0.0
    assert distinct_n([""], n=2) == 0.0
    with pytest.raises(ValueError):
        distinct_n(["a"], n=0)


def test_causal_lm_token_logprobs_cover_every_token_once(tiny_lm):
    from companion.neural_lm import causal_lm_perplexity, causal_lm_token_logprobs

    model, _ = tiny_lm
    seqs = [list(range(5, 25)), [7, 8]]
    short = causal_lm_token_logprobs(model, seqs, bos_id=0, eos_id=0, context_length=6)
    full = causal_lm_token_logprobs(model, seqs, bos_id=0, eos_id=0, context_length=256)
    assert [len(x) for x in short] == [len(x) for x in full] == [21, 3]  # L + 1 predictions
    assert torch.allclose(short[1], full[1])  # fits in one window: identical
    ppl = causal_lm_perplexity(model, seqs, 0, 0)
    assert ppl == pytest.approx(math.exp(-torch.cat(full).mean().item()), rel=1e-5)


def test_causal_lm_token_logprobs_window_defaults_to_the_model_context(tiny_lm):
    from companion.neural_lm import causal_lm_token_logprobs

    model, _ = tiny_lm
    seqs = [list(range(5, 25))]
    context = model.config.max_position_embeddings
    default = causal_lm_token_logprobs(model, seqs, bos_id=0, eos_id=0)
    assert torch.equal(default[0], causal_lm_token_logprobs(model, seqs, 0, 0, context_length=context)[0])
    with pytest.raises(ValueError, match="context_length must be >= 2.*got 1; pass context_length=None"):
        causal_lm_token_logprobs(model, seqs, 0, 0, context_length=1)
    with pytest.raises(ValueError, match=f"context_length={context + 1} is longer than the model's "
                                         f"max_position_embeddings={context}; pass context_length={context}"):
        causal_lm_token_logprobs(model, seqs, 0, 0, context_length=context + 1)
    with pytest.raises(TypeError, match="context_length must be an integer"):
        causal_lm_token_logprobs(model, seqs, 0, 0, context_length=8.0)

"""Byte-level BPE: lossless round trip, merges, compression grows with the vocabulary."""

from __future__ import annotations

import pytest

from companion.tokenizer import train_bpe_tokenizer
from companion.tokenizer_stats import bytes_per_token, first_merges

TEXTS = ["The cat sat on the mat. The cat was happy.", "A dog ran to the park, and the dog sat."] * 30


@pytest.mark.parametrize("text", [
    "Once upon a time, there was a little girl named Lily.",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "Unicode: café, naïve, 日本語, emoji 😊🚀, math ∑x²",
    "<|endoftext|> is special; <|im_start|>user\nhi<|im_end|>",
    "",
])
def test_round_trip_is_lossless(small_tokenizer, text):
    ids = small_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert small_tokenizer.decode(ids) == text


def test_unseen_characters_fall_back_to_bytes(small_tokenizer):
    ids = small_tokenizer("日", add_special_tokens=False)["input_ids"]
    assert len(ids) == len("日".encode())  # three UTF-8 bytes, three byte tokens
    assert small_tokenizer.unk_token_id is None


def test_merges_are_learned_from_frequent_pairs():
    tok = train_bpe_tokenizer(TEXTS, vocab_size=270)
    merges = first_merges(tok, 3)
    assert len(merges) == 3 and all(isinstance(a, str) and isinstance(b, str) for a, b in merges)
    assert "Ġthe" in tok.get_vocab() or "Ġt" in tok.get_vocab()


def test_bigger_vocabulary_compresses_more():
    small = train_bpe_tokenizer(TEXTS, vocab_size=262)
    big = train_bpe_tokenizer(TEXTS, vocab_size=300)
    assert bytes_per_token(big, TEXTS) > bytes_per_token(small, TEXTS) >= 1.0
    text = "héllo"
    assert bytes_per_token(small, [text]) <= len(text.encode())


def test_too_small_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        train_bpe_tokenizer(TEXTS, vocab_size=100)

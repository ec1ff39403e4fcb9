"""Pretraining: packing, clear errors for tiny corpora, checkpoint/resume equivalence."""

from __future__ import annotations

import pytest
import torch

from companion.models import build_causal_lm
from companion.pretrain import PretrainConfig, collate_blocks, pack_texts, pretrain

STORIES = [
    "Once upon a time, there was a little dog named Max. Max liked to run in the park.",
    "Lily found a red ball in the park. She was very happy and played with it all day.",
    "Tom had a big boat. He sailed it on the lake with his dad and they saw a fish.",
] * 30


def tiny_model(tok):
    return build_causal_lm(tok, n_layer=2, n_head=2, n_embd=32, intermediate_size=64, context_length=32)


def test_pack_texts_joins_with_eos_and_cuts_equal_blocks(small_tokenizer):
    tok = small_tokenizer
    stream = [i for t in STORIES[:3] for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    ds = pack_texts(tok, STORIES[:3], block_size=8)
    assert len(ds) == len(stream) // 8  # the partial last block is dropped
    assert all(len(b) == 8 for b in ds["input_ids"])
    assert [i for b in ds["input_ids"] for i in b] == stream[:len(ds) * 8]
    batch = collate_blocks([{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5, 6]}])
    assert torch.equal(batch["input_ids"], batch["labels"]) and batch["input_ids"].shape == (2, 3)


@pytest.mark.parametrize("texts", [[], ["", "   "]])
def test_empty_corpus_is_a_clear_error(small_tokenizer, texts):
    with pytest.raises(ValueError, match="Corpus is empty"):
        pack_texts(small_tokenizer, texts, block_size=16)


def test_too_small_corpus_is_a_clear_error(small_tokenizer):
    with pytest.raises(ValueError, match="Corpus too small.*lower context_length"):
        pack_texts(small_tokenizer, ["a dog"], block_size=64)
    model = tiny_model(small_tokenizer)
    cfg = PretrainConfig(max_steps=2, batch_size=64, context_length=32, output_dir="unused")
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        pretrain(model, small_tokenizer, STORIES[:6], cfg=cfg)


def _cfg(tmp_path, **kw) -> PretrainConfig:
    base = dict(max_steps=8, batch_size=4, context_length=32, learning_rate=3e-3, warmup_steps=2,
                logging_steps=1, eval_steps=4, save_steps=4, output_dir=str(tmp_path), disable_tqdm=True)
    return PretrainConfig(**{**base, **kw})


def test_pretraining_lowers_the_loss(small_tokenizer, tmp_path):
    model = tiny_model(small_tokenizer)
    h = pretrain(model, small_tokenizer, STORIES, STORIES[:6], _cfg(tmp_path / "run", max_steps=30,
                                                                     save_steps=None))
    assert h["steps"] == 30
    assert h["train_loss"][-1] < h["train_loss"][0] - 1.0
    assert h["final_eval_loss"] < h["eval_loss"][0]
    assert h["tokens_per_s"] > 0 and h["tokens_seen"] == 30 * 4 * 32


def test_interrupted_run_resumes_to_the_same_loss_curve(small_tokenizer, tmp_path):
    tok = small_tokenizer
    full = pretrain(tiny_model(tok), tok, STORIES, STORIES[:6], _cfg(tmp_path / "full"))
    # The same run, "killed" after step 4 (a checkpoint is saved there) ...
    part = pretrain(tiny_model(tok), tok, STORIES, STORIES[:6], _cfg(tmp_path / "resumed", stop_after_step=4))
    assert part["steps"] == 4 and (tmp_path / "resumed" / "checkpoint-4").is_dir()
    # ... and restarted from scratch, resuming from the latest checkpoint.
    rest = pretrain(tiny_model(tok), tok, STORIES, STORIES[:6], _cfg(tmp_path / "resumed",
                                                                     resume_from_checkpoint=True))
    assert rest["steps"] == 8
    assert part["train_loss"] == pytest.approx(full["train_loss"][:4], abs=1e-4)
    assert rest["train_steps"] == full["train_steps"]
    assert rest["train_loss"] == pytest.approx(full["train_loss"], abs=1e-4)
    assert rest["final_eval_loss"] == pytest.approx(full["final_eval_loss"], abs=1e-4)


def test_char_tokenizer_round_trip_and_errors():
    from companion.charlm import CharTokenizer, split_text

    tok = CharTokenizer("hello world")
    assert len(tok) == 8 and tok.decode(tok.encode("low hero")) == "low hero"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("xyz")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")
    assert split_text("abcdefghij", 0.2) == ("abcdefgh", "ij")


def test_char_lm_schedule_and_short_training_lowers_loss():
    from companion.charlm import CharLMConfig, lr_at, train_char_lm

    cfg = CharLMConfig(learning_rate=1e-2, min_lr_ratio=0.1, warmup_frac=0.1)
    assert lr_at(0.05, cfg) == pytest.approx(5e-3)
    assert lr_at(0.1, cfg) == pytest.approx(1e-2)
    assert lr_at(1.0, cfg) == pytest.approx(1e-3)
    text = "to be or not to be, that is the question. " * 200
    small = CharLMConfig(n_layer=1, n_head=2, n_embd=32, intermediate_size=64, context_length=32,
                         batch_size=8, time_budget_s=3.0, eval_every_s=1.0, learning_rate=1e-2)
    out = train_char_lm(text, small, progress=False)
    assert out["steps"] > 5 and out["final_val_loss"] < 2.0  # uniform guess: ln(17) = 2.83

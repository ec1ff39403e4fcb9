"""The gpu profile's DPO path, offline: a SmolLM2-shaped chat model in a local folder, LoRA, merge, save."""

from __future__ import annotations

import json

import pytest
import torch
from test_ppo_gpu_profile import save_chat_model

from companion import dpo, pipeline, reward
from companion.models import load_pretrained
from companion.tokenizer import PAD, chat_stop_ids

GOOD = ("Once upon a time, Lily had a red ball. She played with the ball in the park every day. One day the ball "
        "rolled away, and her friend found it. Lily was so happy and they smiled together.")


@pytest.fixture
def gpu_chat(tmp_path, monkeypatch):
    chat = save_chat_model(tmp_path / "chat")
    monkeypatch.setenv("COMPANION_PROFILE", "gpu")
    monkeypatch.setenv("COMPANION_CHAT_MODEL", str(chat))
    return chat


def test_gpu_dpo_policy_is_the_chat_model_with_lora_and_a_distinct_pad(gpu_chat):
    policy, tok, peft_config = pipeline.dpo_policy()
    assert tok.pad_token == PAD and tok.pad_token_id not in chat_stop_ids(tok)
    assert policy.get_input_embeddings().weight.shape[0] == len(tok)
    assert peft_config is not None and peft_config.r == 16
    args = dpo.dpo_config("unused")
    assert args.learning_rate == 5e-6  # LoRA on a real checkpoint, not the tiny model's 2e-4
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16


def test_gpu_dpo_artifact_trains_lora_and_saves_a_merged_model(gpu_chat, monkeypatch, tmp_path):
    monkeypatch.setattr(pipeline, "dpo_sizes", lambda profile=None: dict(prompts=4, answers=2, rounds=2))
    # two fixed answers per prompt (one good, one bad) instead of the stand-in model's noise
    monkeypatch.setattr(reward, "sample_answers",
                        lambda policy, tok, prompts, k, **kw: [[GOOD.replace("Lily", "Max"), "bad bad bad"]
                                                               for _ in prompts])
    base, _, _ = pipeline.dpo_policy()
    out = tmp_path / "dpo"
    out.mkdir()
    meta = pipeline.build_dpo_model(out, learning_rate=1e-2, logging_steps=1, per_device_train_batch_size=2,
                                    gradient_accumulation_steps=1)
    assert meta["pairs"] >= 8 and [r["pairs"] >= 4 for r in meta["rounds"]] == [True, True]
    assert all(len(reward.load_rankings(out / f"round-{k}" / "rankings.jsonl")) == 4 for k in (1, 2))
    first, _ = load_pretrained(str(out / "round-1"))  # round 1's merged model, round 2's reference
    assert not any("lora_" in n for n, _ in first.named_parameters())
    model, tok = load_pretrained(str(out))
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged into plain weights
    assert tok.pad_token == PAD
    history = json.loads((out / "round-2" / "history.json").read_text())
    margins = [m for m in history["rewards/margins"] if m is not None]
    assert len(margins) >= 2
    before = base.state_dict()
    moved = [n for n, p in model.named_parameters() if "embed" not in n and not torch.allclose(p, before[n], atol=1e-6)]
    assert moved and all("proj" in n for n in moved)  # LoRA adapted the linear layers only, then merged
    # the embeddings are untouched but for the new <|pad|> row, drawn afresh by each ensure_distinct_pad
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[:-1], base.get_input_embeddings().weight[:-1])

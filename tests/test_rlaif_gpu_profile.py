"""The gpu profile's RLAIF path, offline: an instruct judge and the chat policy from local folders, LoRA, merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_dpo_gpu_profile import GOOD, gpu_chat  # noqa: F401  (gpu_chat is a fixture used below)

from companion import pipeline, reward, rlaif, tinyworld
from companion.models import load_pretrained


@pytest.fixture
def gpu_models(gpu_chat, monkeypatch):  # noqa: F811  (pytest passes the imported fixture)
    """chapter 9's gpu fixture (a chat model in a local folder), which also serves as the judge."""
    monkeypatch.setenv("COMPANION_JUDGE_MODEL", str(gpu_chat))
    return gpu_chat


def test_gpu_judge_is_an_lm_judge_loaded_from_the_judge_model_folder(gpu_models):
    judge = pipeline.rlaif_judge()
    assert isinstance(judge, rlaif.LMJudge)
    p = rlaif.judge_pair(judge, ["q", "r"], ["a story", "x"], ["another story", "y"], rlaif.TINY_CONSTITUTION[1])
    assert p.shape == (2,) and np.all((p > 0) & (p < 1))


def test_gpu_rlaif_artifact_labels_with_the_judge_trains_lora_and_saves_a_merged_model(gpu_models, monkeypatch,
                                                                                          tmp_path):
    specs = [tinyworld.TaskSpec(n, "ball") for n in ("Lily", "Tom", "Max", "Sue")]
    gold = reward.judge_rankings(specs, [[GOOD.replace("Lily", s.name), "The ball was bad bad bad.", "A ball. The end."]
                                         for s in specs])
    monkeypatch.setattr(pipeline, "dpo_rankings", lambda profile=None: gold)
    out = tmp_path / "rlaif"
    out.mkdir()
    meta = pipeline.build_rlaif_model(out, learning_rate=1e-2, logging_steps=1, per_device_train_batch_size=2,
                                      gradient_accumulation_steps=1)
    ranked = reward.load_rankings(out / "rankings_rlaif.jsonl")
    assert len(ranked) == 4 and all("gold_scores" in r and len(r["scores"]) == 3 for r in ranked)
    assert meta["pairs"] >= 4 and 0.5 < meta["mean_confidence"] <= 1
    model, tok = load_pretrained(str(out))
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged into plain weights
    history = json.loads((out / "rlaif_history.json").read_text())
    assert len([m for m in history["rewards/margins"] if m is not None]) >= 2


def test_rlaif_pairs_fall_back_to_best_vs_worst_when_no_topic_pair_can_be_made(capsys):
    class Longer:
        def prob_first(self, prompts, firsts, seconds, principle):
            return np.array([0.9 if len(f) > len(s) else 0.1 for f, s in zip(firsts, seconds)])

    specs = [tinyworld.TaskSpec("Lily", "dog"), tinyworld.TaskSpec("Tom", "cat")]
    ranked = rlaif.rank_answers(Longer(), reward.judge_rankings(specs, [["no pets here at all", "x"]] * 2),
                                [rlaif.TINY_CONSTITUTION[0]])
    pairs = pipeline.rlaif_pairs(ranked, Longer())
    assert len(pairs) == 2 and "no topic pairs" in capsys.readouterr().out

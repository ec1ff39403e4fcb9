"""pipeline.stage_evaluations: held-out rows of cached stages are computed once, then read back."""

from __future__ import annotations

import time

import numpy as np
import pytest

from companion import artifacts, evaluation, pipeline, tinyworld


@pytest.fixture
def fake_stages(monkeypatch):
    artifacts.store("reward", lambda out: {"note": "stand-in"})
    artifacts.store("sft", lambda out: {"note": "stand-in"})
    monkeypatch.setitem(pipeline.STAGES, "sft", lambda p=None: ("sft-model", "tok"))
    monkeypatch.setattr(pipeline, "reward_model", lambda p=None: ("rm", "rm-tok"))
    calls = []

    def compare(models, specs, rm, rm_tok, **settings):
        calls.append((list(models), settings))
        return {k: {"success": 0.5, "success_se": 0.1, "per_prompt": np.array([1.0, 0.0][:len(specs)]),
                    "replies": ["a"] * len(specs)} for k in models}

    monkeypatch.setattr(evaluation, "compare_policies", compare)
    return calls


def test_rows_are_computed_once_and_keyed_by_specs_settings_and_artifact(fake_stages):
    specs = tinyworld.held_out_prompts(2)
    first = pipeline.stage_evaluations({"SFT": "sft"}, specs)
    again = pipeline.stage_evaluations({"SFT": "sft"}, specs)
    assert len(fake_stages) == 1  # the second call read the stored rows
    assert isinstance(again["SFT"]["per_prompt"], np.ndarray)
    np.testing.assert_array_equal(first["SFT"]["per_prompt"], again["SFT"]["per_prompt"])
    pipeline.stage_evaluations({"SFT": "sft"}, specs, temperature=1.0)
    pipeline.stage_evaluations({"SFT": "sft"}, tinyworld.held_out_prompts(1))
    assert len(fake_stages) == 3  # other settings, other specs: new entries
    time.sleep(1.1)  # "created" has one-second resolution
    artifacts.store("sft", lambda out: {"note": "rebuilt"})  # a rebuilt stage is a new entry too
    pipeline.stage_evaluations({"SFT": "sft"}, specs)
    assert len(fake_stages) == 4
    assert not any(n.startswith(".") for n in artifacts.list_artifacts())


def test_an_unknown_stage_is_named(fake_stages):
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['sfft'\]"):
        pipeline.stage_evaluations({"SFT": "sfft"}, tinyworld.held_out_prompts(2))


def test_a_model_inside_an_artifact_is_keyed_by_that_artifact(fake_stages, monkeypatch):
    artifacts.store("dpo", lambda out: {"note": "stand-in"})
    loaded = []
    monkeypatch.setitem(pipeline.INNER_MODELS, "dpo-round-1",
                        ("dpo", lambda p: loaded.append("round 1") or ("dpo-round-1-model", "tok")))
    specs = tinyworld.held_out_prompts(2)
    pipeline.stage_evaluations({"DPO, one round": "dpo-round-1"}, specs)
    pipeline.stage_evaluations({"DPO, one round": "dpo-round-1"}, specs)
    assert loaded == ["round 1"] and fake_stages[0][0] == ["DPO, one round"]
    time.sleep(1.1)
    artifacts.store("dpo", lambda out: {"note": "rebuilt"})  # a rebuilt DPO run makes its round-1 row stale
    pipeline.stage_evaluations({"DPO, one round": "dpo-round-1"}, specs)
    assert loaded == ["round 1", "round 1"]

"""companion pipeline (companion.runner): plan, resume after a kill, --rebuild, report, clear errors.

The stages are stand-ins (each writes one file through the real artifact cache), so the
runner's own logic is tested in seconds; the stages themselves are tested elsewhere.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from companion import artifacts, cli, evaluation, pipeline, runner


class Killed(Exception):
    pass


@pytest.fixture
def fake_pipeline(monkeypatch):
    built = []
    kill_after = {"stage": None}

    def make(stage):
        def build(p=None, rebuild=False):
            def save(out):
                built.append(stage)
                (out / "weights.txt").write_text(stage)
                return {"train_seconds": 1.0}

            artifacts.get_or_build(stage, save, rebuild=rebuild, recipe=pipeline.RECIPES.get(stage))
            if kill_after["stage"] == stage:
                raise Killed(stage)
            return (f"{stage}-model", "tok")
        return build

    for stage in runner.PARENTS:
        monkeypatch.setitem(pipeline.STAGES, stage, make(stage))
    monkeypatch.setattr(pipeline, "reward_model", lambda p=None: ("rm", "rm-tok"))

    def compare(models, specs, rm, rm_tok, reference=None, known=None, **kw):
        rows = {}
        for i, name in enumerate(models):
            base = (known or {}).get(name) or {"success": 0.2 * i, "success_se": 0.05,
                                               "per_prompt": np.full(len(specs), 0.2 * i), "replies": ["a story."] * len(specs),
                                               "rm_score": float(i), "words": 10.0, "checks": {"name": 1.0}}
            rows[name] = dict(base)
        if reference:
            for name in rows:
                rows[name]["vs_reference"] = evaluation.paired_difference(rows[name]["per_prompt"],
                                                                          rows[reference]["per_prompt"])
                rows[name]["kl"] = 0.0 if name == reference else 1.5
        return rows

    monkeypatch.setattr(evaluation, "compare_policies", compare)
    return built, kill_after


def test_dry_run_prints_the_plan_and_trains_nothing(fake_pipeline, capsys, tmp_path):
    built, _ = fake_pipeline
    out = runner.run(runner.PipelineConfig(align="both", output_dir=str(tmp_path / "run"), dry_run=True))
    assert built == [] and not (tmp_path / "run").exists()
    assert [r["stage"] for r in out["plan"]] == ["tokenizer", "base", "sft", "reward", "ppo", "dpo"]
    assert all(r["status"] == "build" for r in out["plan"])
    text = capsys.readouterr().out
    assert "6 stage(s) to train, estimated" in text and "min" in text


def test_a_killed_run_resumes_at_the_first_missing_stage_and_reports_the_same(fake_pipeline, tmp_path):
    built, kill_after = fake_pipeline
    kill_after["stage"] = "sft"
    with pytest.raises(Killed):
        runner.run(runner.PipelineConfig(align="dpo", output_dir=str(tmp_path / "a")))
    assert built == ["tokenizer", "base", "sft"]
    kill_after["stage"] = None
    resumed = runner.run(runner.PipelineConfig(align="dpo", output_dir=str(tmp_path / "a")))
    assert built == ["tokenizer", "base", "sft", "reward", "dpo"]  # SFT was not trained again
    assert resumed["stages"]["sft"]["status"] == "cached" and resumed["stages"]["dpo"]["status"] == "build"
    again = runner.run(runner.PipelineConfig(align="dpo", output_dir=str(tmp_path / "b")))
    assert len(built) == 5 and all(s["status"] == "cached" for s in again["stages"].values())
    assert again["evaluation"] == resumed["evaluation"]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert set(report["evaluation"]) == {"base", "SFT", "DPO"} and report["profile"] == "tiny"
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| DPO |" in md and "Sample transcripts" in md and (tmp_path / "a" / "success.png").is_file()


def test_rebuild_retrains_the_stage_and_everything_downstream(fake_pipeline, tmp_path):
    built, _ = fake_pipeline
    runner.run(runner.PipelineConfig(align="all", output_dir=str(tmp_path / "r")))
    built.clear()
    rows = runner.plan(runner.PipelineConfig(align="all", rebuild="sft"))
    assert {r["stage"]: r["status"] for r in rows} == {
        "tokenizer": "cached", "base": "cached", "sft": "rebuild", "reward": "rebuild", "ppo": "rebuild",
        "dpo": "rebuild", "rlaif": "rebuild"}
    runner.run(runner.PipelineConfig(align="all", rebuild="reward", output_dir=str(tmp_path / "r")))
    assert built == ["reward", "ppo"]  # DPO and RLAIF are built from SFT, not from the reward model


@pytest.mark.parametrize("kwargs, message", [
    (dict(align="ppo2"), "unknown alignment method 'ppo2'"),
    (dict(profile="big"), "unknown profile 'big'"),
    (dict(align="dpo", rebuild="ppo"), "--rebuild 'ppo' is not a stage of this run"),
    (dict(eval_prompts=0), "eval_prompts must be between 1"),
])
def test_bad_options_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        runner.PipelineConfig(**kwargs)


def test_an_output_folder_of_another_profile_is_refused(fake_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"profile": "gpu"}))
    assert cli.main(["pipeline", "--profile", "tiny", "--output", str(out)]) == 2
    assert "holds a run of the 'gpu' profile" in capsys.readouterr().err
    assert cli.main(["pipeline", "--align", "nope", "--output", str(tmp_path / "x")]) == 2

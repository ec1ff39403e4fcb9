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
    seeds = []  # (stage, seed, sizes) each stage was built with
    kill_after = {"stage": None}

    def make(stage):
        def build(p=None, rebuild=False):
            def save(out):
                built.append(stage)
                seeds.append((stage, p.seed if p else None, dict(p.sizes.get(stage, {})) if p else None))
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
    return built, kill_after, seeds


def test_dry_run_prints_the_plan_and_trains_nothing(fake_pipeline, capsys, tmp_path):
    built, _, _ = fake_pipeline
    out = runner.run(runner.PipelineConfig(align="both", output_dir=str(tmp_path / "run"), dry_run=True))
    assert built == [] and not (tmp_path / "run").exists()
    assert [r["stage"] for r in out["plan"]] == ["tokenizer", "base", "sft", "reward", "ppo", "dpo"]
    assert all(r["status"] == "build" for r in out["plan"])
    text = capsys.readouterr().out
    assert "6 stage(s) to train, estimated" in text and "min" in text


def test_a_killed_run_resumes_at_the_first_missing_stage_and_reports_the_same(fake_pipeline, tmp_path):
    built, kill_after, _ = fake_pipeline
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
    built, _, _ = fake_pipeline
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


def test_sizes_parse_and_bad_sizes_are_clear_errors():
    assert runner.parse_sizes(["base.max_steps=600", "ppo.kl_coef=0.1", "ppo.kl_estimator=k3"]) == {
        "base": {"max_steps": 600}, "ppo": {"kl_coef": 0.1, "kl_estimator": "k3"}}
    with pytest.raises(ValueError, match="must look like STAGE.SETTING=VALUE"):
        runner.parse_sizes(["base=600"])
    with pytest.raises(ValueError, match="'ppo' is not a trained stage of this run"):
        runner.PipelineConfig(align="dpo", sizes={"ppo": {"steps": 4}})
    with pytest.raises(ValueError, match="base has no setting 'max_step'; did you mean one of"):
        runner.PipelineConfig(sizes={"base": {"max_step": 4}})
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        runner.PipelineConfig(seed=-1)
    assert not runner.PipelineConfig().custom and runner.PipelineConfig(seed=2).custom


def test_seed_and_sizes_reach_the_builders_and_keep_their_own_cache(fake_pipeline, tmp_path, capsys):
    _, _, built_with = fake_pipeline
    book_cache = artifacts.cache_root()
    cfg = runner.PipelineConfig(align="dpo", output_dir=str(tmp_path / "mine"), seed=3,
                                sizes={"base": {"max_steps": 600}, "dpo": {"beta": 0.2}})
    rows = runner.run(cfg)
    assert artifacts.cache_root() == book_cache and not artifacts.list_artifacts()  # the book's cache untouched
    run_cache = tmp_path / "mine" / "cache"
    assert (run_cache / "tiny" / "dpo").is_dir() and json.loads((run_cache / "settings.json").read_text())["seed"] == 3
    seeds = {s: (seed, sizes) for s, seed, sizes in built_with}
    assert seeds["base"] == (3, {"max_steps": 600}) and seeds["dpo"] == (3, {"beta": 0.2}) and seeds["sft"] == (3, {})
    assert rows["stages"]["base"]["status"] == "build"
    again = runner.run(cfg)  # resumes from its own cache
    assert all(s["status"] == "cached" for s in again["stages"].values())
    with pytest.raises(ValueError, match="caches stages trained with"):
        runner.run(runner.PipelineConfig(align="dpo", output_dir=str(tmp_path / "mine"), seed=4))
    assert cli.main(["pipeline", "--output", str(tmp_path / "x"), "--size", "base.nope=1"]) == 2
    assert "base has no setting 'nope'" in capsys.readouterr().err


def test_the_plan_scales_the_pretraining_estimate_with_its_steps(fake_pipeline, tmp_path):
    short = runner.plan(runner.PipelineConfig(sizes={"base": {"max_steps": 600}}, output_dir=str(tmp_path / "s")))
    book = runner.plan(runner.PipelineConfig(output_dir=str(tmp_path / "b")))
    est = {r["stage"]: r["estimate_s"] for r in short}
    assert est["base"] == pytest.approx({r["stage"]: r["estimate_s"] for r in book}["base"] / 2)
    unknown = runner.plan(runner.PipelineConfig(sizes={"sft": {"max_steps": 10}}, output_dir=str(tmp_path / "u")))
    assert {r["stage"]: r["estimate_s"] for r in unknown}["sft"] is None
    runner.run(runner.PipelineConfig(output_dir=str(tmp_path / "book")))  # the book's recipe, the shared cache
    assert all(r["status"] == "cached" for r in runner.plan(runner.PipelineConfig(output_dir=str(tmp_path / "b"))))
    variant = runner.plan(runner.PipelineConfig(seed=1, output_dir=str(tmp_path / "v")))
    assert all(r["status"] == "build" for r in variant) and not (tmp_path / "v").exists()  # its own, empty cache


def test_stage_sizes_change_the_book_recipes():
    from dataclasses import replace

    from companion.profiles import profile

    p = replace(profile("tiny"), seed=2, sizes={"base": {"max_steps": 300, "learning_rate": 1e-3},
                                                "reward": {"train_prompts": 16, "learning_rate": 5e-4},
                                                "dpo": {"prompts": 8, "beta": 0.3}})
    cfg = pipeline.base_config(p)
    assert (cfg.max_steps, cfg.warmup_steps, cfg.learning_rate, cfg.seed) == (300, 30, 1e-3, 2)
    book = pipeline.base_config(profile("tiny"))
    assert (book.max_steps, book.warmup_steps, book.seed) == (1200, 120, 0)
    assert pipeline.reward_sizes(p)["train_prompts"] == 16 and "learning_rate" not in pipeline.reward_sizes(p)
    assert pipeline.dpo_sizes(p) == {"prompts": 8, "answers": 4, "rounds": 2}
    from companion.training import runtime_args

    assert runtime_args(p)["seed"] == 2 and runtime_args(profile("tiny"))["seed"] == 0
    with pytest.raises(ValueError, match="stage 'tokenizer' has no sizes"):
        pipeline.size_keys("tokenizer")

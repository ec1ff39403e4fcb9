import json

import pytest

from companion import artifacts


def test_get_or_build_builds_once(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        (out / "weights.txt").write_text("42")
        return {"loss": 1.5}

    d1 = artifacts.get_or_build("demo", build)
    d2 = artifacts.get_or_build("demo", build)
    assert d1 == d2 and len(calls) == 1
    assert (d1 / "weights.txt").read_text() == "42"
    meta = artifacts.metadata("demo")
    assert meta["loss"] == 1.5 and meta["profile"] == "tiny"
    assert json.loads((d1 / "artifact.json").read_text())["name"] == "demo"
    assert artifacts.list_artifacts() == ["demo"]
    artifacts.get_or_build("demo", build, rebuild=True)
    assert len(calls) == 2


def test_an_artifact_from_another_recipe_is_rebuilt():
    calls = []

    def build(out):
        calls.append(out)
        return {"loss": 1.0}

    artifacts.get_or_build("demo", build)  # an old cache entry, made before recipes existed
    artifacts.get_or_build("demo", build, recipe="v2")
    assert len(calls) == 2 and artifacts.metadata("demo")["recipe"] == "v2"
    artifacts.get_or_build("demo", build, recipe="v2")
    assert len(calls) == 2  # same recipe: the cached copy is used
    artifacts.get_or_build("demo", build, recipe="v3")
    assert len(calls) == 3 and artifacts.metadata("demo")["loss"] == 1.0


def test_failed_build_leaves_no_artifact():
    def broken(out):
        (out / "half.txt").write_text("x")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        artifacts.store("broken", broken)
    assert not artifacts.exists("broken")
    assert list(artifacts.artifact_dir("broken").parent.glob(".*broken-*")) == []


def test_profiles_are_separate():
    artifacts.store("x", lambda out: None, profile_name="tiny")
    assert artifacts.exists("x", "tiny") and not artifacts.exists("x", "gpu")
    assert artifacts.remove("x", "tiny") and not artifacts.exists("x", "tiny")


def test_bad_names_and_missing_metadata():
    with pytest.raises(ValueError, match="artifact name"):
        artifacts.artifact_dir("../escape")
    with pytest.raises(FileNotFoundError, match="Build it first"):
        artifacts.metadata("never-built")


def test_cache_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "c"))
    assert artifacts.cache_root() == tmp_path / "c"


def test_cli_lists_artifacts(capsys):
    from companion.cli import main

    artifacts.store("demo", lambda out: None)
    assert main(["artifacts"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "profile=tiny" in capsys.readouterr().out

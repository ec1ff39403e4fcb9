import pytest

from companion import describe, profile
from companion.profiles import GPU, TINY


def test_env_variable_overrides(monkeypatch):
    monkeypatch.setenv("COMPANION_PROFILE", "gpu")
    p = profile()
    assert p.name == "gpu" and not p.is_tiny
    assert p.base_model == GPU.base_model
    monkeypatch.setenv("COMPANION_PROFILE", "tiny")
    assert profile().name == "tiny" and profile().base_model is None


def test_default_is_tiny_without_cuda(monkeypatch):
    monkeypatch.delenv("COMPANION_PROFILE")
    monkeypatch.setattr("companion.profiles._cuda_available", lambda: False)
    monkeypatch.setenv("COMPANION_BF16", "0")
    assert profile() == TINY


def test_tiny_profile_uses_bf16_where_the_cpu_has_it_unless_told(monkeypatch):
    for forced, expected in (("0", False), ("1", True)):
        monkeypatch.setenv("COMPANION_BF16", forced)
        assert profile("tiny").bf16 is expected
    monkeypatch.setenv("COMPANION_BF16", "yes")
    with pytest.raises(ValueError, match="COMPANION_BF16 must be 0 or 1"):
        profile("tiny")
    monkeypatch.delenv("COMPANION_BF16", raising=False)
    for fast in (True, False):
        monkeypatch.setattr("companion.profiles.cpu_has_fast_bf16", lambda fast=fast: fast)
        assert profile("tiny").bf16 is fast


def test_default_is_gpu_with_cuda(monkeypatch):
    monkeypatch.delenv("COMPANION_PROFILE")
    monkeypatch.setattr("companion.profiles._cuda_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda: False)
    p = profile()
    assert p.name == "gpu" and p.device == "cuda"


def test_gpu_profile_without_cuda_runs_on_cpu(monkeypatch):
    monkeypatch.setattr("companion.profiles._cuda_available", lambda: False)
    assert profile("gpu").device == "cpu"


def test_model_ids_can_point_at_local_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPANION_BASE_MODEL", str(tmp_path))
    assert profile("gpu").base_model == str(tmp_path)


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown profile 'huge'.*tiny"):
        profile("huge")


def test_profiles_size_things_differently():
    assert TINY.max_rows < GPU.max_rows
    assert TINY.model_config["n_embd"] < GPU.model_config["n_embd"]
    assert "profile=tiny" in describe(TINY)

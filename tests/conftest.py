"""Shared fixtures: an isolated artifact cache, the tiny profile, and the sample data."""

from __future__ import annotations

import pytest

from companion.data import data_dir


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Every test gets its own artifact cache and the tiny profile unless it says otherwise."""
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COMPANION_PROFILE", "tiny")
    # float32 everywhere: tests compare numbers exactly, and bf16 autocast (the default on CPUs with
    # AMX/AVX512-BF16) rounds differently; the tests of the detection set it themselves
    monkeypatch.setenv("COMPANION_BF16", "0")
    monkeypatch.delenv("COMPANION_BASE_MODEL", raising=False)
    monkeypatch.delenv("COMPANION_CHAT_MODEL", raising=False)
    monkeypatch.delenv("COMPANION_REWARD_MODEL", raising=False)


@pytest.fixture
def sample_data():
    """Path of ../shared/data; skips the test when the sample data is not there."""
    root = data_dir()
    if root is None:
        pytest.skip("sample data not found: set COMPANION_DATA_DIR to the shared/data folder")
    return root


@pytest.fixture(scope="session")
def small_tokenizer():
    from companion.tokenizer import train_bpe_tokenizer

    texts = [
        "Once upon a time, there was a little dog named Max. Max liked to run.",
        "Lily found a red ball in the park. She was very happy and played all day.",
    ] * 20
    return train_bpe_tokenizer(texts, vocab_size=300)

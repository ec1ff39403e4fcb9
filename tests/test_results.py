import dataclasses

import numpy as np
import pytest

from companion import artifacts, results
from companion.evaluation import paired_difference


def _counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_a_result_is_computed_once_and_read_back_with_its_types():
    diff = paired_difference([1.0, 0.0, 1.0], [0.0, 0.0, 1.0])
    compute, calls = _counting({"per_prompt": np.array([1.0, 0.0, 1.0]), "vs": diff, "history": {"kl": [0.5, 1.5]},
                                "replies": ["a", "b"], "seconds": np.float64(3.5)})
    first = results.cached("demo", {"steps": 3}, compute)
    again = results.cached("demo", {"steps": 3}, compute)
    assert len(calls) == 1 and first["cached"] is False and again["cached"] is True
    assert isinstance(again["per_prompt"], np.ndarray) and again["per_prompt"].tolist() == [1.0, 0.0, 1.0]
    assert again["vs"] == diff and again["vs"].significant == diff.significant
    assert again["history"] == {"kl": [0.5, 1.5]} and again["replies"] == ["a", "b"] and again["seconds"] == 3.5


def test_another_key_or_a_rebuilt_dependency_computes_again():
    compute, calls = _counting({"x": 1})
    artifacts.store("sft", lambda out: {"loss": 1.0})
    results.cached("demo", {"steps": 3}, compute, depends=["sft"])
    results.cached("demo", {"steps": 4}, compute, depends=["sft"])
    assert len(calls) == 2
    results.cached("demo", {"steps": 4}, compute, depends=["sft"])
    assert len(calls) == 2
    path = results.result_path("demo", {"steps": 4}, ["sft"])
    import time

    time.sleep(1.1)  # creation times have one-second resolution
    artifacts.store("sft", lambda out: {"loss": 0.5})  # a rebuilt SFT model: results computed from it are stale
    assert results.result_path("demo", {"steps": 4}, ["sft"]) != path
    results.cached("demo", {"steps": 4}, compute, depends=["sft"])
    assert len(calls) == 3
    results.cached("demo", {"steps": 4}, compute, depends=["sft"], rebuild=True)
    assert len(calls) == 4


def test_a_damaged_file_is_computed_again():
    compute, calls = _counting({"x": 1})
    results.cached("demo", {}, compute)
    results.result_path("demo", {}).write_text("{ not json")
    assert results.cached("demo", {}, compute) == {"x": 1, "cached": False} and len(calls) == 2


def test_mistakes_get_clear_errors():
    with pytest.raises(TypeError, match="compute\\(\\) must return a dict"):
        results.cached("demo", {}, lambda: [1, 2])
    with pytest.raises(TypeError, match="key must be a dict"):
        results.cached("demo", "steps=3", lambda: {})
    with pytest.raises(TypeError, match="depends must be a list"):
        results.cached("demo", {}, lambda: {}, depends="sft")
    with pytest.raises(TypeError, match="not models or tensors"):
        results.cached("demo", {}, lambda: {"model": object()})

    @dataclasses.dataclass
    class Foreign:
        x: int

    with pytest.raises(TypeError, match="only companion's dataclasses"):
        results.cached("demo", {}, lambda: {"f": Foreign(1)})
    with pytest.raises(FileNotFoundError, match="No cached artifact 'sft'"):
        results.cached("demo", {}, lambda: {}, depends=["sft"])
    with pytest.raises(ValueError, match="artifact name"):
        results.cached("../escape", {}, lambda: {})

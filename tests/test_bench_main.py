"""bench/__main__.py: the summary table of headline numbers and the JSON it writes for benchmarks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]  # bench/ is not a package of the install: import it from the checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench.__main__ as runner  # noqa: E402


def test_table_has_a_row_per_headline_with_targets():
    results = {"pretrain_throughput": {"ratio": 0.95, "target": 0.9},
               "trainer_overhead": {"sft": {"ratio": 0.85, "target": 0.9}, "reward": {"ratio": 1.0, "target": 0.9}},
               "shakespeare_char": {"skipped": "sample data not found"},
               "generation": {"static_over_dynamic": {"tiny b1": 1.2}},
               "book": {"label": "cold", "total_seconds": 2000.0, "total_target_s": 2700, "total_within_target": True,
                        "max_peak_mib": 3000, "chapters_within_targets": True, "errors": 0},
               "gpu": {"error": "RuntimeError: boom"}}
    table = runner.summary_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| benchmark |") and len(lines) == 2 + 1 + 2 + 1 + 1 + 2 + 1
    assert "| pretrain_throughput | companion pretrain / hand loop, tokens/s | 0.950 | >= 0.9 | yes |" in lines
    assert any("SFTTrainer" in x and "**no**" in x for x in lines)
    assert any(x.startswith("| gpu | failed | RuntimeError: boom") for x in lines)
    assert any("book execution (cold cache)" in x and "< 2700" in x for x in lines)


def test_main_writes_json_with_environment_for_benches_that_do_not(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runner, "RESULTS", tmp_path)
    monkeypatch.setattr(runner, "BENCHES", {"fake": lambda: {"ratio": 0.5, "target": 0.9}})
    monkeypatch.setattr(runner, "ON_REQUEST", {"broken": lambda: 1 / 0})
    assert runner.main(["fake"]) == 0
    saved = json.loads((tmp_path / "fake.json").read_text())
    assert saved["ratio"] == 0.5 and {"machine", "threads", "versions"} <= set(saved)
    assert "| fake | ratio | 0.500 | >= 0.9 | **no** |" in capsys.readouterr().out
    assert runner.main(["fake", "broken"]) == 1  # reported, and the others still ran
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert runner.main(["nope"]) == 2

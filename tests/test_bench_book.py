"""bench/bench_book.py on a tiny temporary notebook folder: order, timing, memory, JSON and chart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).parents[1]  # bench/ is not a package of the install: import it from the checkout
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import bench_book  # noqa: E402


def write_notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_makefile_order_runs_chapter_9_before_chapter_8(tmp_path):
    for name in ("00_preface", "07_ppo", "08_rlaif", "09_dpo", "10_capstone"):
        write_notebook(tmp_path / f"{name}.ipynb", ["1"])
    names = [p.name for p in bench_book.notebook_order(tmp_path)]
    assert names == ["00_preface.ipynb", "07_ppo.ipynb", "09_dpo.ipynb", "08_rlaif.ipynb", "10_capstone.ipynb"]
    assert [p.name for p in bench_book.notebook_order(tmp_path, ["07", "10"])] == ["07_ppo.ipynb", "10_capstone.ipynb"]


def test_real_book_order_matches_makefile():
    names = [p.name for p in bench_book.notebook_order()]
    if "08_rlaif.ipynb" in names and "09_dpo.ipynb" in names:
        assert names.index("08_rlaif.ipynb") == names.index("09_dpo.ipynb") + 1


def test_runs_a_tiny_notebook_and_writes_json_and_chart(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    # the second cell checks the kernel runs in the notebooks' folder, as make notebooks runs it
    write_notebook(book / "01_tiny.ipynb", ["x = sum(range(1000))",
                                           "import os, pathlib\nassert pathlib.Path(os.getcwd()).name == 'book'"])
    out = tmp_path / "results"
    summary = bench_book.main(["--label", "test", "--folder", str(book), "--out-dir", str(out)])
    result = json.loads((out / "book_test.json").read_text())
    assert (out / "book_test.png").stat().st_size > 0
    assert result["label"] == "test" and summary["label"] == "test"
    assert set(result) >= {"machine", "threads", "versions", "chapters", "total_seconds", "max_peak_mib", "table"}
    assert result["versions"]["nbclient"] and result["machine"]["cores"] >= 1
    [chapter] = result["chapters"]
    assert chapter["notebook"] == "01_tiny.ipynb" and chapter["error"] is None
    assert chapter["seconds"] > 0 and chapter["peak_mib"] > 0 and chapter["samples"] > 0
    assert result["total_seconds"] == pytest.approx(chapter["seconds"])
    assert result["total_target_s"] is None  # the 45-minute target is for a cold cache
    assert "01_tiny.ipynb" in result["table"] and "| **total** |" in result["table"]


def test_a_failing_chapter_is_recorded_and_the_next_one_runs(tmp_path):
    write_notebook(tmp_path / "01_bad.ipynb", ["raise ValueError('boom')"])
    write_notebook(tmp_path / "02_good.ipynb", ["y = 1"])
    result = bench_book.run_book(bench_book.notebook_order(tmp_path), "cold", out_dir=tmp_path / "out")
    bad, good = result["chapters"]
    assert "boom" in bad["error"] and good["error"] is None and result["errors"] == 1
    assert result["total_target_s"] == bench_book.BOOK_TARGET_S and result["total_within_target"] is True


def test_no_notebooks_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no notebooks"):
        bench_book.run_book([], "warm", out_dir=tmp_path)

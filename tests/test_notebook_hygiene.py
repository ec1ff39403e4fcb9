"""Every chapter notebook as committed: no outputs, a kernelspec, in the table of contents, Colab-ready."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def toc_files() -> list[str]:
    """The ``file:`` entries of ``_toc.yml`` (and its root), without extensions."""
    text = (ROOT / "_toc.yml").read_text()
    return re.findall(r"^\s*(?:-\s*)?(?:file|root):\s*(\S+)\s*$", text, flags=re.MULTILINE)


def test_there_are_chapter_notebooks():
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_colab_ready(path: Path):
    nb = json.loads(path.read_text())
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec python3 missing"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
    assert not dirty, f"{path.name}: code cells {dirty} were committed with outputs; clear them before committing"
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), f"{path.name}: starts without a title"
    setup = "".join(code[0]["source"])
    assert '"google.colab" in sys.modules' in setup and "%pip install" in setup, \
        f"{path.name}: the first code cell must be the Colab-only install cell"
    assert str(path.relative_to(ROOT).with_suffix("")) in toc_files(), f"{path.name} is not listed in _toc.yml"


def test_every_toc_entry_exists():
    missing = [f for f in toc_files() if not any((ROOT / f).with_suffix(s).exists() for s in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    doubles = [f for f in toc_files() if (ROOT / f).with_suffix(".ipynb").exists() and (ROOT / f).with_suffix(".md").exists()]
    assert not doubles, f"both a .md and an .ipynb exist for {doubles}: delete the placeholder"


def test_colab_cell_is_a_no_op_outside_colab():
    setup = "".join(next(c for c in json.loads(NOTEBOOKS[0].read_text())["cells"] if c["cell_type"] == "code")["source"])
    # the IPython magic becomes a statement that fails if it is ever reached
    python = re.sub(r"^(\s*)%pip .*$", r"\1raise AssertionError('the install line ran outside Colab')", setup,
                    flags=re.MULTILINE)
    assert "AssertionError" in python
    exec(compile(python, "colab-cell", "exec"), {})  # no google.colab here: nothing is installed

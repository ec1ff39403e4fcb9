"""Every chapter notebook as committed: no outputs, a kernelspec, in the table of contents, Colab-ready."""

from __future__ import annotations

import json
import re
import sys
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
    def exists(f: str, suffix: str) -> bool:  # not with_suffix: book/api/companion.data.loader has dots
        return (ROOT / f"{f}{suffix}").exists()

    missing = [f for f in toc_files() if not any(exists(f, s) for s in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"
    doubles = [f for f in toc_files() if exists(f, ".ipynb") and exists(f, ".md")]
    assert not doubles, f"both a .md and an .ipynb exist for {doubles}: delete the placeholder"


def colab_cell_as_python(path: Path) -> str:
    """The notebook's first code cell, its ``%pip`` magic turned into a statement that records the call."""
    setup = "".join(next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")["source"])
    python = re.sub(r"^(\s*)%pip (.*)$", r"\1INSTALLS.append('\2')", setup, flags=re.MULTILINE)
    assert "INSTALLS.append" in python
    return python


def test_every_chapter_has_the_same_colab_cell():
    cells = {p.name: colab_cell_as_python(p) for p in NOTEBOOKS}
    assert len(set(cells.values())) == 1, f"the Colab cells differ: {sorted(cells)}"


def test_colab_cell_is_a_no_op_outside_colab(monkeypatch, capsys):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    scope = {"INSTALLS": []}
    exec(compile(colab_cell_as_python(NOTEBOOKS[0]), "colab-cell", "exec"), scope)
    assert scope["INSTALLS"] == [] and capsys.readouterr().out == ""


def test_colab_cell_on_colab_turns_on_widgets_and_names_gpu_and_profile(monkeypatch, capsys):
    import types

    calls = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append("widgets"))
    colab = types.ModuleType("google.colab")
    colab.output = output
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    scope = {"INSTALLS": []}
    exec(compile(colab_cell_as_python(NOTEBOOKS[0]), "colab-cell", "exec"), scope)
    assert scope["INSTALLS"] == []  # companion is importable here: nothing to install
    assert calls == ["widgets"]
    printed = capsys.readouterr().out
    assert "CPU with" in printed and "profile=" in printed, printed


def test_every_companion_module_has_an_api_page_in_the_toc_and_the_index():
    import pkgutil

    import companion

    modules = sorted(m.name for m in pkgutil.walk_packages(companion.__path__, "companion.")
                     if not m.name.endswith("__main__"))
    pages = sorted(p.stem for p in (ROOT / "book" / "api").glob("companion*.md"))
    assert pages == modules, f"API pages out of date: missing {set(modules) - set(pages)}, stale {set(pages) - set(modules)}"
    toc, index = toc_files(), (ROOT / "book" / "api" / "index.md").read_text()
    for m in modules:
        assert f"book/api/{m}" in toc, f"book/api/{m}.md is not listed in _toc.yml"
        assert f"{{doc}}`{m} <{m}>`" in index, f"{m} is missing from the table in book/api/index.md"
        page = (ROOT / "book" / "api" / f"{m}.md").read_text()
        assert f".. automodule:: {m}\n" in page, f"book/api/{m}.md does not document {m}"


def test_the_package_docstring_names_only_real_modules():
    import pkgutil

    import companion

    modules = {m.name for m in pkgutil.iter_modules(companion.__path__)}
    listed = companion.__doc__.split("not by chapter:")[1].split("(")[0]
    names = [n.strip() for n in listed.replace("\n", " ").split(",")]
    assert len(names) > 10 and all(names)
    assert not set(names) - modules, f"companion/__init__.py names modules that do not exist: {set(names) - modules}"


def test_chapter_titles_carry_their_numbers():
    for path in NOTEBOOKS:
        number = path.name.split("_")[0]
        if number == "00" or not number.isdigit():
            continue  # the preface and the appendices
        title = "".join(json.loads(path.read_text())["cells"][0]["source"]).splitlines()[0]
        assert title.startswith(f"# {int(number)}. "), f"{path.name}: title {title!r} should start with '# {int(number)}. '"


def test_every_chapter_states_its_run_time_in_its_header():
    for path in NOTEBOOKS:
        if path.name.startswith("00_"):
            continue  # the preface runs nothing
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert "**Run time.** Tiny profile on 2 CPU cores:" in header and "Colab T4, gpu profile:" in header, \
            f"{path.name}: the header must state the run time on 2 CPU cores and on a Colab T4"


def test_every_chapter_states_its_prerequisites_in_its_header():
    for path in NOTEBOOKS:
        if path.name.startswith("00_"):
            continue  # the preface is read first
        header = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert "**Prerequisites.** " in header, f"{path.name}: the header must state the chapter's prerequisites"

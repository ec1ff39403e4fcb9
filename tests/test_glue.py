"""The book's numbers come from its runs: glue() stores plain numbers, and every key the prose uses is glued."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from companion.widgets.glue import glue

BOOK = Path(__file__).resolve().parents[1] / "book"
ROLE = re.compile(r"\{glue(?::text|:md|:figure|:any)?\}`([^`]+)`")
CALL = re.compile(r"""\bglue\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def test_glue_stores_plain_numbers_for_format_specs(monkeypatch):
    seen = {}
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: seen.update({name: (value, display)}))
    assert glue("a", np.float32(0.25)) == np.float32(0.25)
    glue("b", torch.tensor(3))
    glue("c", np.int64(7))
    assert seen == {"a": (0.25, False), "b": (3, False), "c": (7, False)}
    assert type(seen["a"][0]) is float and type(seen["b"][0]) is int and f"{seen['a'][0]:.1%}" == "25.0%"


def test_glue_rejects_a_name_the_prose_could_not_use():
    with pytest.raises(ValueError, match="glue name must be a Python identifier"):
        glue("gold success", 0.5)


def _cells(path):
    return json.loads(path.read_text())["cells"]


@pytest.mark.parametrize("path", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.name)
def test_every_glue_key_in_the_prose_is_glued_in_the_same_notebook(path):
    cells = _cells(path)
    used = {m.split(":")[0] for c in cells if c["cell_type"] == "markdown" for m in ROLE.findall("".join(c["source"]))}
    defined = {k for c in cells if c["cell_type"] == "code" for k in CALL.findall("".join(c["source"]))}
    assert not used - defined, f"{path.name}: prose uses glue keys no code cell glues: {sorted(used - defined)}"

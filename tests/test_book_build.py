"""The book's own Sphinx extension (book/_ext): every page loads each script once."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))

import dedupe_assets  # noqa: E402


def test_a_script_added_twice_is_loaded_once_and_the_order_is_kept():
    from sphinx.builders.html._assets import _JavaScript

    thebe = _JavaScript(None, body='const THEBE_JS_URL = "https://unpkg.com/thebe@0.8.2/lib/index.js"')
    toggle = _JavaScript(None, body="var togglebuttonSelector = '.toggle';")
    other = _JavaScript(None, body="const x = 1")
    context = {"script_files": [_JavaScript("_static/a.js"), thebe, toggle, _JavaScript("_static/a.js"),
                                _JavaScript("", body=thebe.attributes["body"]), toggle, other,
                                _JavaScript("_static/a.js", **{"async": "async"})]}
    dedupe_assets.dedupe_scripts(None, "book/07_ppo", "page.html", context, None)
    assert [(s.filename, s.attributes.get("body"), s.attributes.get("async")) for s in context["script_files"]] == [
        ("_static/a.js", None, None), (None, thebe.attributes["body"], None), (None, toggle.attributes["body"], None),
        (None, "const x = 1", None), ("_static/a.js", None, "async")]

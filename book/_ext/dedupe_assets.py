"""A Sphinx extension for this book's build: each page loads every script once.

sphinx-thebe and sphinx-togglebutton add their inline configuration scripts after the HTML
builder has started, and Sphinx 7 then writes them twice into every page, so every page logs
``Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``.  This drops
the second copy of any script (same file, same inline body, same attributes).
"""

from __future__ import annotations


def _key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    filename = getattr(script, "filename", script) or ""  # an inline script: None from one path, "" from another
    return filename, tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

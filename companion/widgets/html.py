"""Self-contained HTML/JavaScript widgets that work with and without a kernel.

A widget here is an HTML fragment with its data embedded as JSON and its logic in a small
inline script.  It runs in Jupyter, Colab and the static book alike (MyST-NB passes
``text/html`` outputs through), because nothing calls back into Python: the Python side
precomputes the numbers (with tested pure functions) and the browser only looks them up
or does light arithmetic.
"""

from __future__ import annotations

import html
import json
import uuid

from IPython.display import HTML

_BASE_CSS = """
<style>
.cw-box {font-family: system-ui, sans-serif; font-size: 14px; border: 1px solid #ddd;
         border-radius: 8px; padding: 12px; margin: 8px 0; max-width: 760px;}
.cw-box label {margin-right: 8px;}
.cw-box .cw-row {margin: 6px 0;}
.cw-box .cw-bar {height: 14px; background: #4c78a8; display: inline-block; vertical-align: middle;}
.cw-box .cw-muted {color: #666;}
.cw-box table {border-collapse: collapse;}
.cw-box td, .cw-box th {padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left;}
</style>
"""


def js_widget(body_html: str, script: str, data: dict, title: str | None = None) -> HTML:
    """Build an HTML widget.

    ``body_html`` and ``script`` may use ``{id}``-prefixed element ids via the placeholder
    ``__ID__``; the script receives ``root`` (the widget's container element) and ``DATA``
    (the JSON-decoded ``data``).
    """
    uid = "cw" + uuid.uuid4().hex[:10]
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    heading = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    body = body_html.replace("__ID__", uid)
    js = script.replace("__ID__", uid)
    return HTML(
        f"{_BASE_CSS}<div class='cw-box' id='{uid}'>{heading}{body}</div>"
        f"<script type='application/json' id='{uid}-data'>{payload}</script>"
        f"<script>(function(){{const root=document.getElementById('{uid}');"
        f"const DATA=JSON.parse(document.getElementById('{uid}-data').textContent);{js}}})();</script>"
    )

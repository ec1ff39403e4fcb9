"""Widgets that work with a kernel (live, computed in Python) and without one (the static book).

:func:`js_widget` builds the *static* widget: an HTML fragment with its data embedded as JSON
and its logic in a small inline script.  It runs anywhere (MyST-NB passes ``text/html``
outputs through) because nothing calls back into Python: the numbers are precomputed.

:class:`BookWidget` is the *live* one: an ``anywidget`` whose view runs the same drawing code,
fed by Python on every change.  Its mime bundle carries both the widget view (what Jupyter and
Colab show) and the static HTML (what the book shows: ``_config.yml`` ranks ``text/html`` first).
If the live widget cannot be built, :func:`live_or_static` returns a :class:`StaticWidget`.
"""

from __future__ import annotations

import html
import inspect
import json
import uuid
import warnings
from collections.abc import Callable

import anywidget
import traitlets
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


LIVE_NOTE = "Live mode ({what}) needs Jupyter or Colab with a running kernel; this is the precomputed version."


def js_widget(body_html: str, script: str, data: dict, title: str | None = None, note: str | None = None) -> HTML:
    """Build an HTML widget.

    ``body_html`` and ``script`` may use ``{id}``-prefixed element ids via the placeholder
    ``__ID__``; the script receives ``root`` (the widget's container element) and ``DATA``
    (the JSON-decoded ``data``).  ``note`` is one muted line at the bottom of the box.
    """
    uid = "cw" + uuid.uuid4().hex[:10]
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    heading = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    body = body_html.replace("__ID__", uid)
    if note:
        body += f"<div class='cw-row cw-muted cw-note'>{html.escape(note)}</div>"
    js = script.replace("__ID__", uid)
    return HTML(
        f"{_BASE_CSS}<div class='cw-box' id='{uid}'>{heading}{body}</div>"
        f"<script type='application/json' id='{uid}-data'>{payload}</script>"
        f"<script>(function(){{const root=document.getElementById('{uid}');"
        f"const DATA=JSON.parse(document.getElementById('{uid}-data').textContent);{js}}})();</script>"
    )


def widget_css() -> str:
    """The widgets' CSS without its ``<style>`` tags (the live widget's ``_css``)."""
    return _BASE_CSS.replace("<style>", "").replace("</style>", "").strip()


def live_esm(shared_js: str, render_js: str) -> str:
    """An anywidget module: ``shared_js`` (drawing code the static widget runs too), then ``render``.

    ``render_js`` is the body of ``render({model, el})``; it may return a cleanup function.
    """
    return f"{shared_js}\nfunction render({{ model, el }}) {{\n{render_js}\n}}\nexport default {{ render }};\n"


def error_text(exc: Exception) -> str:
    """What the live widget shows for a failed update: the message of a ``ValueError``, else the type too."""
    return str(exc) if isinstance(exc, ValueError | TypeError) else f"{type(exc).__name__}: {exc}"


class StaticWidget:
    """The static widget alone: its mime bundle is ``text/html`` (``.data`` is that HTML, as in ``HTML``)."""

    def __init__(self, html_text: str):
        self.data = html_text

    def _repr_html_(self) -> str:
        return self.data

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/html": self.data, "text/plain": f"<{type(self).__name__}>"}


class BookWidget(anywidget.AnyWidget):
    """Base of the live widgets: Python recomputes ``state`` whenever a synced input changes.

    Subclasses list their inputs in ``_inputs`` and implement ``_compute() -> dict``; an
    exception there becomes ``state = {"error": message}`` (the view shows it), never a
    traceback.  ``data`` is the static HTML that rides along in the mime bundle.
    """

    _css = widget_css()
    _inputs: tuple[str, ...] = ()
    state = traitlets.Dict().tag(sync=True)

    def __init__(self, **kwargs):
        self._ready = self._busy = False
        self.data = ""
        super().__init__(**kwargs)
        self.observe(self._changed, names=list(self._inputs))
        self._ready = True
        self.recompute()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _init_signature(cls)  # the API page shows __init__'s arguments, not traitlets' __new__

    def _changed(self, change) -> None:
        if self._ready and not self._busy:
            self.recompute()

    def _compute(self) -> dict:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _error_state(self, message: str) -> dict:
        return {"error": message}

    def recompute(self) -> dict:
        """Recompute ``state`` from the current inputs (called on every change); returns it."""
        self._busy = True
        try:
            state = {**self._compute(), "error": ""}
        except Exception as exc:  # shown in the widget: the reader fixes the input and goes on
            state = self._error_state(error_text(exc))
        finally:
            self._busy = False
        self.state = state
        return state

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, meta = bundle if isinstance(bundle, tuple) else (bundle or {}, {})
        return {**data, "text/html": self.data}, meta


def _init_signature(cls) -> inspect.Signature:
    sig = inspect.signature(cls.__init__)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


BookWidget.__signature__ = _init_signature(BookWidget)


def live_or_static(build: Callable[[], BookWidget], static_html: Callable[[str | None], str],
                   what: str) -> BookWidget | StaticWidget:
    """The live widget with the static HTML attached, or the static widget alone if building it fails.

    ``static_html(note)`` renders the static widget with a one-line ``note``; ``what`` says
    what live mode adds ("type your own prompt").
    """
    try:
        widget = build()
    except ValueError:
        raise  # a bad argument: the caller fixes the call
    except Exception as exc:  # no widget machinery here: the precomputed version still shows
        warnings.warn(f"live widget unavailable ({error_text(exc)}); showing the precomputed version",
                      stacklevel=3)
        return StaticWidget(static_html(f"Live mode is off here: {error_text(exc)}"))
    widget.data = static_html(LIVE_NOTE.format(what=what))
    return widget

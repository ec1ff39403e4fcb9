"""Where the built book is, which browser drives it, and how pages stay offline (shared by tests/browser)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))  # Debian's; $CHROMIUM: another Chromium or Chrome
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# The one console error every page of the book logs, not ours: pydata-sphinx-theme reports the empty
# colour mode of a first visit (and resets it).  (sphinx-thebe's doubled `THEBE_JS_URL` is removed by book/_ext.)
THEME_ERRORS = ("Got invalid theme mode: . Resetting to auto.",)


def offline(server: str):
    """A route handler: the book's own files pass, every other host gets an empty answer."""
    return lambda route: route.continue_() if route.request.url.startswith(server) else route.fulfill(status=200, body="")

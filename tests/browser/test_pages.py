"""Every page of the built book in headless Chromium: no JavaScript errors, no broken images or internal links.

Runs against ``_build/html`` (``make build-check`` or ``make book``) served on localhost; requests
that leave localhost get an empty answer, as a reader offline would.  A screenshot of the top of
every chapter page goes to ``_build/screenshots/``.  Skipped when the book is not built or
Chromium is missing (conftest.py).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from book_site import CHROMIUM, CHROMIUM_ARGS, HTML, THEME_ERRORS, offline

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")
PAGES = sorted(p.relative_to(HTML).as_posix() for p in HTML.glob("book/**/*.html")) + ["index.html"]
SCREENSHOTS = HTML.parent / "screenshots"


class Links(HTMLParser):
    """The ``href`` of every link and the ``src`` of every image and script of a page."""

    def __init__(self):
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.targets.append(a["href"])
        if tag in ("img", "script") and a.get("src"):
            self.targets.append(a["src"])


def broken_targets(page: str) -> list[str]:
    """Internal links, images and scripts of ``page`` that point to no file of the build."""
    parser = Links()
    parser.feed((HTML / page).read_text(encoding="utf-8"))
    broken = []
    for target in parser.targets:
        url = urlparse(target)
        if url.scheme or url.netloc or target.startswith(("#", "mailto:", "javascript:")):
            continue  # external, or an anchor on the same page
        path = (HTML / page).parent / unquote(url.path)
        if not path.resolve().exists():
            broken.append(target)
    return broken


def test_the_book_has_its_pages():
    assert {"book/01_overview.html", "book/07_ppo.html", "book/10_capstone.html", "book/api/index.html"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_no_broken_internal_link_image_or_script(page):
    assert broken_targets(page) == [], f"{page} points to files that do not exist"


@pytest.fixture(scope="module")
def browser(server):
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b, server
        b.close()


def test_every_page_loads_without_javascript_errors_and_its_images_render(browser):
    b, server = browser
    SCREENSHOTS.mkdir(exist_ok=True)
    page = b.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda err: errors.append(f"{page.url}: {err}"))
    page.route("**/*", offline(server))
    unrendered = []
    for name in PAGES:
        if name == "index.html":
            continue  # a redirect to the preface (its links are checked above)
        page.goto(f"{server}/{name}", wait_until="load")
        unrendered += [f"{name}: {src}" for src in page.evaluate(
            "() => [...document.images].filter(i => i.complete && i.naturalWidth === 0 && !/^https?:/.test("
            "i.getAttribute('src') || '')).map(i => i.getAttribute('src'))")]
        if re.match(r"book/\d\d_", name):
            page.screenshot(path=str(SCREENSHOTS / (Path(name).stem + ".png")))
    page.close()
    real = [e for e in errors if not any(known in e for known in THEME_ERRORS)]
    assert real == [], "JavaScript errors:\n" + "\n".join(real)
    assert unrendered == [], f"images that did not render: {unrendered}"
    assert len(list(SCREENSHOTS.glob("*.png"))) >= 11

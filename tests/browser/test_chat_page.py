"""Chapter 10's chat box in headless Chromium: the in-page models answer what onnxruntime answers in Python.

Runs against the built book (``make build-check`` or ``make book``: ``_build/html``), served on
localhost; requests that leave localhost are answered with an empty body, so the page is offline.
Skipped when the page is not built or no Chromium is installed (conftest.py).
"""

from __future__ import annotations

import json

import pytest
from book_site import CHROMIUM, CHROMIUM_ARGS, HTML, THEME_ERRORS, offline

PAGE = HTML / "book" / "10_capstone.html"
CHAT = HTML / "_static" / "chat"
QUESTION = "Write a story about Max and a boat."
TRICKY_TEXTS = ["Hello world!", "  two  spaces\n\nnew lines\t tab ", "Lily's dog's ball, isn't it?",
                "émoji 🐶 and 中文", "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "12345 and 3.14"]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements.txt)")


@pytest.fixture(scope="module")
def manifest() -> dict:
    path = CHAT / "manifest.json"
    assert path.exists(), f"{path} is missing: the book build did not run `companion export-web` (make chat-files)"
    info = json.loads(path.read_text())
    assert info["models"], f"no models in {path} (skipped: {info['skipped']}): run the chapters first (make notebooks)"
    missing = [f for f in ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
               if not (CHAT / "ort" / f).exists()]
    assert not missing, f"onnxruntime-web files {missing} are missing from {CHAT / 'ort'}: make chat-files needs npm"
    return info


@pytest.fixture(scope="module")
def browser_page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page()
        errors = []  # every console error and uncaught exception (the tests leave out THEME_ERRORS)
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda err: errors.append(str(err)))

        page.route("**/*", offline(server))
        page.goto(f"{server}/book/10_capstone.html")
        yield page, errors
        browser.close()


def chat_errors(errors: list[str]) -> list[str]:
    """The console errors and uncaught exceptions that are not the theme's known ones."""
    return [e for e in errors if e not in THEME_ERRORS]


def test_every_model_answers_in_the_page_as_onnxruntime_does_in_python(browser_page, manifest):
    from companion import export

    page, errors = browser_page
    box = page.locator(".cw-box:has(.cw-ask)").first
    sync_api.expect(box.locator(".cw-ask")).to_be_enabled(timeout=30_000)
    box.locator(".cw-question").fill(QUESTION)
    box.locator(".cw-ask").click()
    sync_api.expect(box).to_have_attribute("data-state", "answered", timeout=300_000)
    (HTML.parent / "screenshots").mkdir(exist_ok=True)
    box.screenshot(path=str(HTML.parent / "screenshots" / "chat_answered.png"))
    answers = {td.get_attribute("data-model"): td.inner_text() for td in box.locator(".cw-live-reply").all()}
    labels = [m["label"] for m in manifest["models"]]
    assert sorted(answers) == sorted(labels)
    assert all(a.strip() and a != "..." for a in answers.values()), answers

    tokenizer = export.tokenizer_from_web(CHAT / manifest["tokenizer"])
    sft = next(m for m in manifest["models"] if m["stage"] == "sft")
    expected = export.onnx_greedy(CHAT / sft["file"], tokenizer, QUESTION, manifest["max_new_tokens"],
                                  manifest["context_length"])
    assert answers[sft["label"]] == expected
    assert chat_errors(errors) == [], f"console errors: {chat_errors(errors)}"


def test_the_page_tokenizer_encodes_and_decodes_like_the_python_one(browser_page, manifest):
    from companion import export

    page, errors = browser_page
    tokenizer = export.tokenizer_from_web(CHAT / manifest["tokenizer"])
    got = page.evaluate("""async (texts) => {
        const data = await (await fetch(CompanionChat.chatBase() + 'bpe.json')).json();
        const tok = new CompanionChat.BPETokenizer(data);
        return texts.map((t) => { const ids = tok.encode(t); return [ids, tok.decode(ids)]; });
    }""", TRICKY_TEXTS)
    for text, (ids, decoded) in zip(TRICKY_TEXTS, got):
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"], text
        assert decoded == tokenizer.decode(ids, skip_special_tokens=True), text
    assert chat_errors(errors) == [], f"console errors: {chat_errors(errors)}"

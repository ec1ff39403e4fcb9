"""widgets.chat: recorded answers side by side, in a page with no kernel."""

from __future__ import annotations

import json
import re

import pytest

from companion.widgets import chat

DATA = {"prompts": ["Tell me about Lily.", "</script><b>x</b>"], "models": ["SFT", "DPO"],
        "replies": {"SFT": ["Lily was happy.", "a"], "DPO": ["Lily and a dog.", "b"]}}


def test_the_widget_embeds_every_answer_and_escapes_the_page():
    page = chat.chat_widget(DATA).data
    payload = re.search(r"<script type='application/json' id='[^']+'>(.*?)</script>", page, re.S).group(1)
    assert json.loads(payload.replace("<\\/", "</")) == DATA
    assert "<b>x</b>" not in page.split("<script")[0]  # the prompt text is escaped in the HTML
    assert page.count("class='cw-reply'") == 2 and "<th>DPO</th>" in page


def test_bad_data_is_named():
    with pytest.raises(ValueError, match="lacks"):
        chat.chat_widget({"prompts": []})
    with pytest.raises(ValueError, match="prompts is empty"):
        chat.chat_widget_data({"m": (None, None)}, [])


def test_chat_widget_data_asks_every_model(monkeypatch):
    from companion import sft

    monkeypatch.setattr(sft, "chat_responses", lambda m, tok, convs, **kw: [f"{m}: {c[0]['content']}" for c in convs])
    data = chat.chat_widget_data({"A": ("a", None), "B": ("b", None)}, ["hi", "bye"])
    assert data["replies"] == {"A": ["a: hi", "a: bye"], "B": ["b: hi", "b: bye"]}
    assert chat.ask({"A": ("a", None)}, "yo") == {"A": "a: yo"}

"""Chat side by side: the same prompt to every stage's model, in Jupyter and in the static book.

The answers are generated in Python (greedy, so they are reproducible) and embedded in the
page; the browser switches between prompts.  Its Ask box runs the models exported by
``companion export-web`` in the reader's browser (``static/chat_onnx.js``, onnxruntime-web)
where the rendered book ships them in ``_static/chat/``; elsewhere (Jupyter) it keeps the
recorded answers and says that :func:`ask` asks the live models a new question.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence

from companion.widgets.html import js_widget


def chat_widget_data(models: Mapping[str, tuple], prompts: Sequence[str], max_new_tokens: int = 160) -> dict:
    """Every model's greedy answer to every prompt: ``{"prompts", "models", "replies": {model: [...]}}``."""
    from companion.sft import chat_responses

    if not prompts:
        raise ValueError("prompts is empty: give at least one question to ask the models")
    if not models:
        raise ValueError("models is empty: give a mapping of name -> (model, tokenizer)")
    convs = [[{"role": "user", "content": p}] for p in prompts]
    replies = {name: chat_responses(m, tok, convs, max_new_tokens=max_new_tokens) for name, (m, tok) in models.items()}
    return {"prompts": list(prompts), "models": list(models), "replies": replies}


def ask(models: Mapping[str, tuple], prompt: str, max_new_tokens: int = 160, temperature: float = 0.0) -> dict:
    """Ask every model ``prompt`` now (needs a kernel); returns ``{model: answer}`` and prints them."""
    from companion.sft import chat_responses

    out = {name: chat_responses(m, tok, [[{"role": "user", "content": prompt}]], max_new_tokens=max_new_tokens,
                                temperature=temperature)[0] for name, (m, tok) in models.items()}
    for name, text in out.items():
        print(f"--- {name}\n{text}\n")
    return out


_SCRIPT = """
const sel = root.querySelector('.cw-prompt');
const cells = root.querySelectorAll('.cw-reply');
function show() {
  const i = parseInt(sel.value);
  DATA.models.forEach((m, j) => { cells[j].textContent = DATA.replies[m][i]; });
}
sel.addEventListener('change', show);
show();
function wire() {
  if (window.CompanionChat) { window.CompanionChat.attach(root); return; }
  root.querySelector('.cw-question').disabled = root.querySelector('.cw-ask').disabled = true;
  root.querySelector('.cw-note').textContent = NO_PAGE_MODELS;
}
if (window.CompanionChat || document.readyState !== 'loading') wire();
else document.addEventListener('DOMContentLoaded', wire);
"""

NO_PAGE_MODELS = ("No in-page models here (the rendered book runs them in your browser); with a kernel, "
                  "chat.ask(models, \"your question\") asks the live Python models.")


def chat_widget(data: dict, title: str = "Ask each stage's model (recorded greedy answers)"):
    """An HTML widget: pick a prompt and read every model's answer side by side, or ask a new question.

    The Ask box works where ``static/chat_onnx.js`` and the exported models are on the page
    (the rendered book); in Jupyter it is disabled and says that :func:`ask` asks the live models.
    """
    missing = [k for k in ("prompts", "models", "replies") if k not in data]
    if missing:
        raise ValueError(f"data lacks {missing}: build it with chat_widget_data(models, prompts)")
    options = "".join(f"<option value='{i}'>{html.escape(p)}</option>" for i, p in enumerate(data["prompts"]))
    head = "".join(f"<th>{html.escape(m)}</th>" for m in data["models"])
    cells = "".join("<td class='cw-reply' style='vertical-align:top; white-space:pre-wrap; width:"
                    f"{100 // max(1, len(data['models']))}%'></td>" for _ in data["models"])
    body = (f"<div class='cw-chat' data-source='notebook'>"
            f"<div class='cw-row'><label>Prompt:</label><select class='cw-prompt'>{options}</select></div>"
            f"<table style='width:100%'><tr>{head}</tr><tr>{cells}</tr></table>"
            "<div class='cw-row'><input class='cw-question' type='text' size='60' "
            "placeholder='Tell me a story about Lily and a boat.'><button class='cw-ask' type='button'>Ask</button></div>"
            "<div class='cw-note cw-muted'></div><div class='cw-live'></div></div>")
    script = _SCRIPT.replace("NO_PAGE_MODELS", json.dumps(NO_PAGE_MODELS))
    return js_widget(body, script, data, title)

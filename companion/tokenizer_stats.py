"""Looking inside a BPE tokenizer: its merges, how it splits text, how well it compresses."""

from __future__ import annotations

import json
from collections.abc import Sequence


def first_merges(tokenizer, n: int = 10) -> list[tuple[str, str]]:
    """The first ``n`` merge rules, in the order training learned them (most frequent first).

    Byte-level tokens show a space as ``Ġ`` and a newline as ``Ċ``.
    """
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = model.get("merges", [])
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges[:n]]


def pieces(tokenizer, text: str) -> list[str]:
    """How ``text`` is split: the decoded string of every token."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode([i]) for i in ids]


def bytes_per_token(tokenizer, texts: Sequence[str]) -> float:
    """UTF-8 bytes per token over ``texts``: 1.0 means no compression at all."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    if n_tokens == 0:
        raise ValueError("No tokens: pass at least one non-empty text.")
    return n_bytes / n_tokens

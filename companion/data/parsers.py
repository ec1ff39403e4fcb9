"""Turn each source's raw records into rows of one standard format."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

EOT = "<|endoftext|>"
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def read_text(path: Path) -> str:
    return Path(path).read_text(encoding="utf-8")


def read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_json(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def split_stories(text: str) -> list[dict]:
    """TinyStories text files separate stories with ``<|endoftext|>``."""
    return [{"text": s.strip()} for s in text.split(EOT) if s.strip()]


def alpaca_to_messages(rec: dict) -> dict:
    """Alpaca ``instruction/input/output`` -> a two-turn conversation."""
    user = rec["instruction"].strip()
    if rec.get("input", "").strip():
        user += "\n\n" + rec["input"].strip()
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": rec["output"].strip()},
        ]
    }


def hh_to_messages(transcript: str) -> list[dict]:
    """Parse an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages."""
    parts = _HH_TURN.split(transcript)
    messages = []
    # parts = [prefix, role, text, role, text, ...]
    for role, text in zip(parts[1::2], parts[2::2], strict=True):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": text.strip()})
    return messages


def hh_to_preference(rec: dict) -> dict | None:
    """HH-RLHF stores whole transcripts; the prompt is the shared part before the last reply."""
    chosen, rejected = hh_to_messages(rec["chosen"]), hh_to_messages(rec["rejected"])
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    if chosen[:-1] != rejected[:-1]:
        return None
    return {"prompt": chosen[:-1], "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def oasst_tree_to_ranking(tree: dict) -> dict | None:
    """One OpenAssistant message tree -> the ranked replies to its first prompt."""
    prompt = tree["prompt"]
    replies = [r for r in prompt.get("replies", []) if r.get("rank") is not None and not r.get("deleted")]
    if len(replies) < 2:
        return None
    replies.sort(key=lambda r: r["rank"])
    return {"prompt": prompt["text"], "answers": [r["text"] for r in replies], "ranks": [r["rank"] for r in replies]}


def oasst_flat_to_rankings(rows: Iterable[dict], lang: str = "en") -> list[dict]:
    """oasst1 on the Hub is a flat message table; group ranked replies under root prompts."""
    rows = list(rows)
    roots = {r["message_id"]: r for r in rows if r["parent_id"] is None and r.get("lang") == lang}
    children: dict[str, list[dict]] = {}
    for r in rows:
        if r["parent_id"] in roots and r.get("rank") is not None:
            children.setdefault(r["parent_id"], []).append(r)
    out = []
    for mid, root in roots.items():
        tree = {"prompt": {"text": root["text"], "replies": children.get(mid, [])}}
        rec = oasst_tree_to_ranking(tree)
        if rec:
            out.append(rec)
    return out


def sharegpt_to_preference(rec: dict) -> dict:
    """LLaMA-Factory's ``conversations/chosen/rejected`` -> conversational preference."""
    role = {"human": "user", "gpt": "assistant", "system": "system"}
    prompt = [{"role": role[m["from"]], "content": m["value"]} for m in rec["conversations"]]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": rec["chosen"]["value"]}],
        "rejected": [{"role": "assistant", "content": rec["rejected"]["value"]}],
    }


def kto_to_unpaired(rec: dict) -> dict:
    messages = rec["messages"]
    return {"prompt": messages[:-1], "completion": [messages[-1]], "label": bool(rec["label"])}


def read_tsv_classification(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            vals = line.rstrip("\n").split("\t")
            rec = dict(zip(header, vals, strict=False))
            rows.append({"text": rec["sentence"].strip(), "label": int(rec["label"])})
    return rows


def read_names(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(folder).glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append({"name": line.strip(), "language": path.stem})
    return rows

"""One loader for every dataset in the book: local sample first, then the Hub.

``load_dataset("tinystories", split="train")`` looks in ``$COMPANION_DATA_DIR`` (CI sets
it to ``../shared/data``; a ``shared/data`` folder beside the repository is found too)
and falls back to the Hugging Face Hub id, streaming only the rows the profile needs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Dataset

from companion.data import parsers as P
from companion.data.formats import check_format
from companion.profiles import profile as active_profile

DATA_DIR_ENV = "COMPANION_DATA_DIR"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Source:
    """Where a dataset lives locally and on the Hub, and how to parse it."""

    name: str
    format: str
    description: str
    local: dict[str, str]  # split -> path relative to the data dir
    read_local: Callable[[Path, str], list[dict]]
    hub_id: str | None = None
    hub_kwargs: dict = field(default_factory=dict)
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split
    from_hub: Callable[[dict], dict | None] | None = None  # row mapper; None = already standard
    hub_batch: Callable[[list[dict]], list[dict]] | None = None  # whole-table mapper


def _stories(path: Path, split: str) -> list[dict]:
    return P.split_stories(P.read_text(path))


def _shakespeare(path: Path, split: str) -> list[dict]:
    text = P.read_text(path)
    cut = int(0.9 * len(text))  # nanoGPT's split: first 90% train, last 10% validation
    return [{"text": text[:cut] if split == "train" else text[cut:]}]


def _jsonl_map(fn):
    return lambda path, split: [r for r in map(fn, P.read_jsonl(path)) if r is not None]


def _json_map(fn):
    return lambda path, split: [r for r in map(fn, P.read_json(path)) if r is not None]


def _imdb(path: Path, split: str) -> list[dict]:
    return [{"text": r["text"], "label": int(r["label"])} for r in P.read_jsonl(path)]


SOURCES: dict[str, Source] = {
    s.name: s
    for s in [
        Source(
            "tinystories", "language_modeling", "Short children's stories (Eldan & Li, 2023)",
            {"train": "tinystories/tinystories_train_2116.txt",
             "validation": "tinystories/tinystories_heldout_200.txt"},
            _stories, hub_id="roneneldan/TinyStories",
        ),
        Source(
            "tinyshakespeare", "language_modeling", "Karpathy's tiny-shakespeare (1.1 MB, 90/10 split)",
            {"train": "pretrain/tinyshakespeare.txt", "validation": "pretrain/tinyshakespeare.txt"},
            _shakespeare, hub_id="karpathy/tiny_shakespeare", hub_splits={"train": "train", "validation": "validation"},
        ),
        Source(
            "alpaca", "conversational", "Stanford Alpaca instructions (52K; 5K locally)",
            {"train": "alpaca/alpaca_data_5000.json"}, _json_map(P.alpaca_to_messages),
            hub_id="tatsu-lab/alpaca", from_hub=P.alpaca_to_messages,
        ),
        Source(
            "capybara", "conversational", "Multi-turn chats (trl-lib/Capybara)", {}, None,
            hub_id="trl-lib/Capybara",
        ),
        Source(
            "hh_rlhf", "preference", "Anthropic HH-RLHF, helpful-base (local: test split only)",
            {"test": "hh_rlhf/helpful-base/test.jsonl.gz"}, _jsonl_map(P.hh_to_preference),
            hub_id="Anthropic/hh-rlhf", hub_kwargs={"data_dir": "helpful-base"}, from_hub=P.hh_to_preference,
        ),
        Source(
            "hh_rlhf_harmless", "preference", "Anthropic HH-RLHF, harmless-base (red-team prompts)",
            {"test": "hh_rlhf/harmless-base/test.jsonl.gz"}, _jsonl_map(P.hh_to_preference),
            hub_id="Anthropic/hh-rlhf", hub_kwargs={"data_dir": "harmless-base"}, from_hub=P.hh_to_preference,
        ),
        Source(
            "ultrafeedback", "preference", "UltraFeedback, binarized (trl-lib)", {}, None,
            hub_id="trl-lib/ultrafeedback_binarized",
        ),
        Source(
            "dpo_demo", "preference", "LLaMA-Factory DPO demo pairs (English)",
            {"train": "preference/dpo_en_demo.json"}, _json_map(P.sharegpt_to_preference),
        ),
        Source(
            "kto_demo", "unpaired_preference", "LLaMA-Factory KTO demo (thumbs up/down)",
            {"train": "preference/kto_en_demo.json"}, _json_map(P.kto_to_unpaired),
            hub_id="trl-lib/kto-mix-14k",
        ),
        Source(
            "oasst_rankings", "ranking", "OpenAssistant prompts with 2-9 human-ranked replies",
            {"train": "preference/oasst_en_100_tree.jsonl"}, _jsonl_map(P.oasst_tree_to_ranking),
            hub_id="OpenAssistant/oasst1", hub_batch=P.oasst_flat_to_rankings,
        ),
        Source(
            "sst2", "classification", "GLUE SST-2 movie-review sentences (10K train locally)",
            {"train": "sst2/train_10k.tsv", "validation": "sst2/dev.tsv"},
            lambda path, split: P.read_tsv_classification(path),
            hub_id="stanfordnlp/sst2", from_hub=lambda r: {"text": r["sentence"], "label": r["label"]},
        ),
        Source(
            "imdb", "classification", "IMDB reviews (200 balanced test reviews locally)",
            {"test": "sentiment/imdb_test_200.jsonl"}, _imdb, hub_id="stanfordnlp/imdb",
        ),
        Source(
            "names", "names", "Surnames from 18 languages (PyTorch char-RNN tutorial)",
            {"train": "names_char_rnn/names"}, lambda path, split: P.read_names(path),
        ),
    ]
}


def data_dir() -> Path | None:
    """The local sample-data folder, or None when there is none."""
    env = os.environ.get(DATA_DIR_ENV)
    if env and not Path(env).expanduser().is_dir():
        raise FileNotFoundError(f"{DATA_DIR_ENV}={env!r} is not a folder: point it at the sample data "
                                f"(the shared/data folder beside the repository) or unset it")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [_REPO_ROOT.parent / "shared" / "data", _REPO_ROOT / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None


def available() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return sorted(SOURCES)


def _resolve_limit(limit) -> int | None:
    if limit == "profile":
        return active_profile().max_rows
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise ValueError(f"limit must be a positive int, None (all rows) or 'profile', got {limit!r}")
    return limit


def load_dataset(name: str, split: str = "train", limit: int | None | str = "profile",
                 local_only: bool = False) -> Dataset:
    """Load a dataset of the book in its standard format.

    Args:
        name: one of :func:`available` (e.g. ``"tinystories"``, ``"hh_rlhf"``).
        split: ``"train"``, ``"validation"`` or ``"test"`` (what exists depends on the source).
            For ``"tinystories"`` read from the local sample data, ``"validation"`` is not
            TinyStories' validation file: it is the 200 stories of the *train* split that follow
            the local training slice (held out from training all the same); from the Hub it is
            the official validation split.
        limit: at most this many rows; ``"profile"`` (default) uses the active profile's
            ``max_rows``; ``None`` loads everything.
        local_only: never fall back to the Hub.
    """
    if name not in SOURCES:
        raise ValueError(f"Unknown dataset {name!r}. Available: {available()}")
    src = SOURCES[name]
    limit = _resolve_limit(limit)
    root = data_dir()
    if root is not None and split in src.local and (root / src.local[split]).exists():
        rows = src.read_local(root / src.local[split], split)
        if limit is not None:
            rows = rows[:limit]
        return check_format(Dataset.from_list(rows), src.format)
    if root is not None and src.local and split not in src.local and src.hub_id is None:
        raise ValueError(f"Dataset {name!r} has no split {split!r} locally; available: {sorted(src.local)}")
    if local_only or src.hub_id is None:
        where = f"{root / src.local.get(split, '?')}" if root else f"${DATA_DIR_ENV} (unset; no shared/data found)"
        raise FileNotFoundError(
            f"Dataset {name!r} split {split!r} is not available locally (looked in {where})"
            + ("" if src.hub_id else " and it has no Hub source")
            + f". Set {DATA_DIR_ENV} to the folder with the sample data"
            + (f" or allow Hub access for {src.hub_id!r}." if src.hub_id else ".")
        )
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        local = sorted(s for s in src.local if root is not None and (root / src.local[s]).exists())
        raise FileNotFoundError(
            f"Dataset {name!r} has no split {split!r} in the local sample data"
            + (f" (local splits: {local})" if local else "")
            + f", and the Hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE): use a local split, or go online "
            f"to stream {src.hub_id!r}."
        )
    return _load_from_hub(src, split, limit)


def _load_from_hub(src: Source, split: str, limit: int | None) -> Dataset:
    hub_split = src.hub_splits.get(split, split)
    if src.hub_batch is not None:  # needs the whole table (small datasets only)
        raw = datasets.load_dataset(src.hub_id, split=hub_split, **src.hub_kwargs)
        rows = src.hub_batch(list(raw))
        rows = rows[:limit] if limit else rows
        return check_format(Dataset.from_list(rows), src.format)
    if limit is None:
        ds = datasets.load_dataset(src.hub_id, split=hub_split, **src.hub_kwargs)
        if src.from_hub is not None:
            ds = ds.map(src.from_hub, remove_columns=ds.column_names).filter(lambda r: r is not None)
        return check_format(ds, src.format)
    stream = datasets.load_dataset(src.hub_id, split=hub_split, streaming=True, **src.hub_kwargs)
    rows = []
    for rec in stream:
        rec = src.from_hub(rec) if src.from_hub else rec
        if rec is not None:
            rows.append(rec)
        if len(rows) >= limit:
            break
    return check_format(Dataset.from_list(rows), src.format)

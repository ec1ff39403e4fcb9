"""The dataset formats TRL trainers accept, and a check that names what is missing."""

from __future__ import annotations

from datasets import Dataset

# format name -> required columns (TRL's standard formats, plus two of the book's own)
FORMATS: dict[str, tuple[str, ...]] = {
    "language_modeling": ("text",),
    "prompt_completion": ("prompt", "completion"),
    "conversational": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "unpaired_preference": ("prompt", "completion", "label"),
    "classification": ("text", "label"),
    "ranking": ("prompt", "answers", "ranks"),  # one prompt, K answers, rank 0 = best
    "names": ("name", "language"),
}


def check_format(dataset: Dataset, fmt: str) -> Dataset:
    """Return ``dataset`` unchanged if it has the columns of ``fmt``; else raise ValueError.

    The error names the missing columns and the columns that are present, so a reader
    can rename (``dataset.rename_column``) instead of reading a traceback from a trainer.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}; known formats: {sorted(FORMATS)}")
    if not isinstance(dataset, Dataset):
        raise TypeError(f"expected a datasets.Dataset, got {type(dataset).__name__}")
    missing = [c for c in FORMATS[fmt] if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"Dataset is not in {fmt!r} format: missing column(s) {missing}; it has "
            f"{dataset.column_names}. Rename or add them, e.g. "
            f"dataset.rename_column('{dataset.column_names[0] if dataset.column_names else 'old'}', "
            f"'{missing[0]}')."
        )
    if len(dataset) == 0:
        raise ValueError(f"Dataset in {fmt!r} format is empty: it needs at least one row.")
    return dataset

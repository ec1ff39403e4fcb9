"""Datasets in TRL's standard formats, from local samples or the Hugging Face Hub."""

from companion.data.formats import FORMATS, check_format
from companion.data.loader import SOURCES, available, data_dir, load_dataset

__all__ = ["FORMATS", "SOURCES", "available", "check_format", "data_dir", "load_dataset"]

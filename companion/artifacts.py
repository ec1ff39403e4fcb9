"""A cache of trained artifacts (tokenizer, base model, SFT model, reward model, ...).

Each artifact is a directory ``$COMPANION_CACHE/<profile>/<name>/`` holding whatever its
builder saved (``save_pretrained`` output, usually) plus ``artifact.json`` with metadata.
A chapter asks for what it needs with :func:`get_or_build`: cached if present, otherwise
built (with a progress bar) and stored, so every chapter also runs on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from platformdirs import user_cache_dir

from companion.profiles import profile as active_profile

CACHE_ENV = "COMPANION_CACHE"
META_FILE = "artifact.json"


def cache_root() -> Path:
    """Root of the artifact cache: ``$COMPANION_CACHE`` or the user cache dir."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("companion", appauthor=False)).expanduser()


def _check_name(name: str) -> str:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"artifact name {name!r} must be non-empty letters, digits, '-', '_' or '.'")
    return name


def artifact_dir(name: str, profile_name: str | None = None) -> Path:
    """Where artifact ``name`` of a profile lives (it may not exist yet)."""
    return cache_root() / (profile_name or active_profile().name) / _check_name(name)


def exists(name: str, profile_name: str | None = None) -> bool:
    return (artifact_dir(name, profile_name) / META_FILE).exists()


def metadata(name: str, profile_name: str | None = None) -> dict:
    path = artifact_dir(name, profile_name) / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No cached artifact {name!r} in {path.parent}. Build it first (the chapter that "
            f"creates it, or `companion build {name}`)."
        )
    return json.loads(path.read_text())


def store(name: str, save: Callable[[Path], dict | None], profile_name: str | None = None) -> Path:
    """Run ``save(tmpdir)`` and atomically move the result into the cache.

    ``save`` writes files into the directory it is given and may return a dict of
    metadata (metrics, settings) that is stored beside them.
    """
    target = artifact_dir(name, profile_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        meta = save(tmp) or {}
        meta = {"name": name, "profile": profile_name or active_profile().name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def get_or_build(name: str, build: Callable[[Path], dict | None], rebuild: bool = False,
                 profile_name: str | None = None, recipe: str | None = None) -> Path:
    """Directory of artifact ``name``: cached, or built now with ``build(dir)`` and cached.

    ``recipe`` names how the artifact is made; a cached copy made by another recipe (an
    older version of the book, say) is stale and is rebuilt.
    """
    stale = (recipe is not None and exists(name, profile_name)
             and metadata(name, profile_name).get("recipe") != recipe)
    if rebuild or stale or not exists(name, profile_name):
        store(name, lambda out: {**(build(out) or {}), **({"recipe": recipe} if recipe else {})}, profile_name)
    return artifact_dir(name, profile_name)


def remove(name: str, profile_name: str | None = None) -> bool:
    """Delete a cached artifact; True if there was one."""
    d = artifact_dir(name, profile_name)
    if d.exists():
        shutil.rmtree(d)
        return True
    return False


def list_artifacts(profile_name: str | None = None) -> list[str]:
    root = cache_root() / (profile_name or active_profile().name)
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if (p / META_FILE).exists())

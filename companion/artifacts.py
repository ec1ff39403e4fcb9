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
import sys
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


BUILD_PREFIX = ".build-"  # a build in progress: .build-<name>-<pid>-<random>
OLD_PREFIX = ".old-"  # the previous copy while a rebuild swaps it out: .old-<name>-<pid>-<random>


class DamagedArtifactError(RuntimeError):
    """A cached artifact whose files do not match its metadata (a killed write, a truncated file)."""


def _manifest(d: Path) -> dict[str, int]:
    """Every file under ``d`` (but the metadata) with its size in bytes."""
    return {str(f.relative_to(d)): f.stat().st_size for f in sorted(d.rglob("*")) if f.is_file() and f.name != META_FILE}


def _read_meta(d: Path) -> dict:
    return json.loads((d / META_FILE).read_text())


def damage(d: Path) -> str | None:
    """Why the artifact folder ``d`` is not complete, or None if it is (its metadata lists every file and size)."""
    try:
        meta = _read_meta(d)
    except (OSError, ValueError) as e:
        return f"{META_FILE} cannot be read ({type(e).__name__}: {e})"
    for rel, size in (meta.get("files") or {}).items():  # caches written before manifests existed list none
        f = d / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != size:
            return f"{rel} has {f.stat().st_size} bytes, its metadata says {size}"
    return None


def _owner_alive(folder: Path) -> bool:
    """True if the process named in a temporary folder's name (``.<kind>-<name>-<pid>-<random>``) still runs."""
    try:
        os.kill(int(folder.name.rsplit("-", 2)[-2]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _temporary(parent: Path, prefix: str, name: str) -> list[Path]:
    """The ``<prefix><name>-<pid>-<random>`` folders of artifact ``name`` (not of "name-2" and the like)."""
    return sorted(p for p in parent.glob(f"{prefix}{name}-*")
                  if p.is_dir() and p.name[len(prefix):].rsplit("-", 2)[0] == name)


def _recover(name: str, parent: Path) -> None:
    """Finish what a killed writer left: restore a swapped-out copy, delete dead builds."""
    if not parent.exists():
        return
    target = parent / name
    for old in _temporary(parent, OLD_PREFIX, name):
        if _owner_alive(old):
            continue  # a rebuild in progress in another process
        if not (target / META_FILE).exists() and damage(old) is None:
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            old.rename(target)  # the rebuild died between its two renames: the old copy comes back
        else:
            shutil.rmtree(old, ignore_errors=True)
    for build in _temporary(parent, BUILD_PREFIX, name):
        if not _owner_alive(build):
            shutil.rmtree(build, ignore_errors=True)


def exists(name: str, profile_name: str | None = None) -> bool:
    """True if artifact ``name`` is cached and complete."""
    d = artifact_dir(name, profile_name)
    _recover(name, d.parent)
    return (d / META_FILE).exists() and damage(d) is None


def metadata(name: str, profile_name: str | None = None) -> dict:
    d = artifact_dir(name, profile_name)
    _recover(name, d.parent)
    path = d / META_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No cached artifact {name!r} in {path.parent}. Build it first (the chapter that "
            f"creates it, or `companion build {name}`)."
        )
    problem = damage(d)
    if problem:
        raise DamagedArtifactError(f"artifact {name!r} in {d} is damaged: {problem}. Rebuild it with "
                                   f"`companion build {name} --rebuild` (or delete the folder).")
    return _read_meta(d)


def store(name: str, save: Callable[[Path], dict | None], profile_name: str | None = None) -> Path:
    """Run ``save(tmpdir)`` and swap the result into the cache; a kill at any point leaves no broken copy.

    ``save`` writes files into the directory it is given and may return a dict of
    metadata (metrics, settings) that is stored beside them, with the size of every file
    (checked before the artifact counts as present).  The metadata is written last; an
    existing copy is renamed aside, the new one renamed into place, then the old one
    deleted, so the cache always holds a complete copy or none that counts.
    """
    target = artifact_dir(name, profile_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    _recover(name, target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{name}-{os.getpid()}-", dir=target.parent))
    old = None
    try:
        meta = save(tmp) or {}
        meta = {"name": name, "profile": profile_name or active_profile().name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta, "files": _manifest(tmp)}
        (tmp / (META_FILE + ".part")).write_text(json.dumps(meta, indent=2, default=str))
        os.replace(tmp / (META_FILE + ".part"), tmp / META_FILE)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{OLD_PREFIX}{name}-{os.getpid()}-", dir=target.parent))
            os.rmdir(old)
            target.rename(old)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not target.exists():
            old.rename(target)  # put the previous copy back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def get_or_build(name: str, build: Callable[[Path], dict | None], rebuild: bool = False,
                 profile_name: str | None = None, recipe: str | None = None) -> Path:
    """Directory of artifact ``name``: cached, or built now with ``build(dir)`` and cached.

    ``recipe`` names how the artifact is made; a cached copy made by another recipe (an
    older version of the book, say) is stale and is rebuilt, and so is a damaged one
    (with a message saying why).
    """
    d = artifact_dir(name, profile_name)
    present = exists(name, profile_name)
    if not present and (d / META_FILE).exists():
        print(f"artifact {name!r} in {d} is damaged ({damage(d)}); rebuilding it", file=sys.stderr)
    stale = present and recipe is not None and metadata(name, profile_name).get("recipe") != recipe
    if rebuild or stale or not present:
        store(name, lambda out: {**(build(out) or {}), **({"recipe": recipe} if recipe else {})}, profile_name)
    return d


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
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / META_FILE).exists())

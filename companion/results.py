"""Results of a chapter's side experiments, computed once per configuration and stored.

A chapter's main models are artifacts (:mod:`companion.artifacts`).  Its side experiments
(a second training run with another setting, a held-out evaluation of it) produce numbers,
curves and sample texts rather than a model the next chapter needs.  :func:`cached` keeps
those: the first run computes them, later runs of the same configuration (a re-executed
page, a second look at the chapter) read them back in a moment.  The key names everything
the result depends on; the artifacts it was computed from enter the key by their creation
time, so rebuilding the SFT model, say, makes every result computed from it stale.

Stored as JSON under ``$COMPANION_CACHE/<profile>/.results/<name>-<digest>.json``; numpy
arrays and the book's small dataclasses (``evaluation.PairedDifference``) survive the trip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from companion import artifacts
from companion.profiles import profile as active_profile

_ARRAY, _DATACLASS = "__ndarray__", "__dataclass__"


def encode(value):
    """``value`` as JSON-able data: numpy arrays and companion dataclasses are tagged so :func:`decode` restores them."""
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("companion."):
            raise TypeError(f"cannot store a {cls.__module__}.{cls.__qualname__}: only companion's dataclasses "
                            "are restored; store its fields as a dict instead")
        return {_DATACLASS: f"{cls.__module__}:{cls.__qualname__}",
                **{f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise TypeError(f"result keys must be strings to store as JSON, got {bad[:3]}")
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a result: return numbers, strings, lists, dicts, "
                    "numpy arrays or companion dataclasses (not models or tensors)")


def decode(data):
    """Inverse of :func:`encode`."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if _ARRAY in data:
        return np.asarray(data[_ARRAY], dtype=data["dtype"])
    if _DATACLASS in data:
        module, qualname = data[_DATACLASS].split(":")
        cls = getattr(importlib.import_module(module), qualname)
        return cls(**{k: decode(v) for k, v in data.items() if k != _DATACLASS})
    return {k: decode(v) for k, v in data.items()}


def result_path(name: str, key: Mapping, depends: Sequence[str] = (), profile_name: str | None = None) -> Path:
    """Where the result of ``name`` for ``key`` (and the artifacts in ``depends`` as they are now) is stored."""
    from companion import __version__

    pname = profile_name or active_profile().name
    stamps = {d: artifacts.metadata(d, pname).get("created") for d in depends}
    full = {"key": key, "depends": stamps, "companion": __version__}
    digest = hashlib.sha1(json.dumps(full, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return artifacts.cache_root() / pname / ".results" / f"{artifacts._check_name(name)}-{digest}.json"


def cached(name: str, key: Mapping, compute: Callable[[], dict], depends: Sequence[str] = (),
           profile_name: str | None = None, rebuild: bool = False) -> dict:
    """``compute()``'s result for this ``key``: stored the first time, read back after that.

    ``key`` is a JSON-able dict of every setting the result depends on (a config's fields,
    seeds, the evaluation prompts); ``depends`` names the cached artifacts it was computed
    from (e.g. ``("sft", "reward")``), which must exist.  ``compute`` returns a dict of
    numbers, strings, lists, numpy arrays or companion dataclasses.  The returned dict has
    ``"cached": True`` when it was read back.
    """
    if not isinstance(key, Mapping):
        raise TypeError(f"key must be a dict of the settings the result depends on, got {type(key).__name__}")
    if isinstance(depends, str):
        raise TypeError(f"depends must be a list of artifact names, got the string {depends!r}; e.g. ['sft']")
    path = result_path(name, key, depends, profile_name)
    if path.is_file() and not rebuild:
        try:
            return {**decode(json.loads(path.read_text())), "cached": True}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            pass  # a damaged file: compute it again
    result = compute()
    if not isinstance(result, Mapping):
        raise TypeError(f"compute() must return a dict, got {type(result).__name__}")
    data = encode({k: v for k, v in result.items() if k != "cached"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)  # atomic: a killed run leaves the old file or none
    return {**result, "cached": False}

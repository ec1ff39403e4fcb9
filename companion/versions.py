"""Which versions of the libraries under `companion` it supports, and clear errors when they drift.

``requirements.txt`` pins the exact versions the book is tested with; ``pyproject.toml``
declares the ranges below (a test keeps the two in step).  TRL and transformers rename and
remove APIs between minor releases, so an import that fails inside ``companion`` is turned
into an error that names the supported range and the pinned version.
"""

from __future__ import annotations

import re
import warnings
from importlib import metadata

# package -> (lowest supported, first unsupported)
SUPPORTED = {
    "torch": ("2.4", None),
    "transformers": ("5.0", "6"),
    "trl": ("1.16", "2"),
    "peft": ("0.17", None),
    "datasets": ("4.0", None),
    "accelerate": ("1.0", None),
    "tokenizers": ("0.21", None),
}


def _parse(version: str) -> tuple[int, ...]:
    """'1.16.0rc1' -> (1, 16, 0): the numeric release part."""
    return tuple(int(x) for x in re.findall(r"\d+", version.split("+")[0].split("rc")[0].split("dev")[0])[:3])


def installed(package: str) -> str | None:
    """The installed version of ``package`` (without importing it), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def supported_range(package: str) -> str:
    low, high = SUPPORTED[package]
    return f">={low}" + (f",<{high}" if high else "")


def is_supported(package: str, version: str) -> bool:
    low, high = SUPPORTED[package]
    v = _parse(version)
    return v >= _parse(low) and (high is None or v < _parse(high))


def pinned(package: str) -> str | None:
    """The exact version ``requirements.txt`` pins (None when the file is not beside the package)."""
    from pathlib import Path

    req = Path(__file__).resolve().parents[1] / "requirements.txt"
    if not req.exists():
        return None
    m = re.search(rf"^{re.escape(package)}==(\S+)", req.read_text(), flags=re.MULTILINE | re.IGNORECASE)
    return m.group(1) if m else None


def check_versions() -> list[str]:
    """Warn about installed packages outside the supported ranges; return the warnings."""
    problems = []
    for package in SUPPORTED:
        version = installed(package)
        if version is not None and not is_supported(package, version):
            problems.append(f"{package} {version} is outside the range companion supports ({supported_range(package)}); "
                            f"install the tested version with `pip install -r requirements.txt`")
    for p in problems:
        warnings.warn(p, stacklevel=2)
    return problems


def incompatible(package: str, error: ImportError) -> ImportError:
    """An ImportError that says which ``package`` API moved and which versions work (raise it ``from error``)."""
    pin = pinned(package)
    return ImportError(
        f"companion could not import what it needs from {package} {installed(package) or '(not installed)'}: "
        f"{error}. companion supports {package}{supported_range(package)}"
        + (f" and is tested with {package}=={pin}" if pin else "")
        + f"; install it with `pip install \"{package}{'==' + pin if pin else supported_range(package)}\"`."
    )

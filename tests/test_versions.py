"""companion.versions: supported ranges in step with pyproject/requirements, and clear errors on API drift."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from companion import versions

ROOT = Path(__file__).resolve().parents[1]


def test_supported_ranges_are_the_ones_pyproject_declares():
    deps = re.search(r"dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), flags=re.S).group(1)
    declared = dict(re.findall(r'"([a-z_-]+)([^"]*)"', deps))
    for package in versions.SUPPORTED:
        assert declared[package] == versions.supported_range(package), package


def test_pinned_versions_are_inside_the_supported_ranges():
    for package in versions.SUPPORTED:
        pin = versions.pinned(package)
        assert pin is not None, f"requirements.txt pins no {package}"
        assert versions.is_supported(package, pin), f"{package}=={pin} is outside {versions.supported_range(package)}"


def test_version_comparison():
    assert versions.is_supported("trl", "1.16.0") and versions.is_supported("trl", "1.99.3")
    assert not versions.is_supported("trl", "1.15.2") and not versions.is_supported("trl", "2.0.0")
    assert versions.is_supported("trl", "1.17.0rc1") and versions.is_supported("torch", "2.13.0+cpu")


def test_check_versions_warns_outside_the_range(monkeypatch):
    monkeypatch.setattr(versions, "installed", lambda p: "2.1.0" if p == "trl" else None)
    with pytest.warns(UserWarning, match=r"trl 2.1.0 is outside the range companion supports \(>=1.16,<2\)"):
        assert len(versions.check_versions()) == 1


def test_a_moved_api_names_the_supported_range_and_the_pin():
    code = "import sys, types; sys.modules['trl'] = types.ModuleType('trl'); import companion.dpo"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "companion could not import what it needs from trl" in out.stderr
    assert "companion supports trl>=1.16,<2" in out.stderr and f"trl=={versions.pinned('trl')}" in out.stderr

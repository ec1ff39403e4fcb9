"""The artifact cache survives a writer killed at any point (SIGKILL in a real subprocess) and damaged files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from companion import artifacts

# A writer process: builds artifact "demo" whose "weights.bin" holds ``version`` repeated, and
# SIGKILLs itself at the point named by ``kill`` (via patched file writes and renames).
WRITER = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from companion import artifacts

    version, kill = sys.argv[1], sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    renames = []
    real_rename = Path.rename
    def rename(self, target):
        renames.append(self)
        if kill == "before-swap" or (kill == "between-renames" and len(renames) == 2):
            die()
        return real_rename(self, target)
    Path.rename = rename
    real_rmtree = artifacts.shutil.rmtree
    def rmtree(path, *a, **k):
        if kill == "before-old-deleted" and ".old-" in str(path):
            die()
        return real_rmtree(path, *a, **k)
    artifacts.shutil.rmtree = rmtree

    def save(out):
        with open(out / "weights.bin", "wb") as f:
            f.write(version.encode() * 1000)
            if kill == "during-weights":
                f.flush()
                die()
        (out / "config.json").write_text("{}")
        return {"version": version}

    artifacts.store("demo", save, profile_name="tiny")
''')


def write(version: str, kill: str = "none") -> int:
    """Run the writer in a subprocess; its return code (-9 when it was killed)."""
    env = {**os.environ, "COMPANION_PROFILE": "tiny"}
    return subprocess.run([sys.executable, "-c", WRITER, version, kill], env=env, timeout=120).returncode


def folder() -> Path:
    return artifacts.artifact_dir("demo", "tiny")


def leftovers() -> list[str]:
    return sorted(p.name for p in folder().parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("kill", ["during-weights", "before-swap"])
def test_a_first_build_killed_leaves_nothing_that_counts(kill):
    assert write("A", kill) == -9
    assert not artifacts.exists("demo", "tiny")
    assert artifacts.list_artifacts("tiny") == []  # the temporary folder is not listed
    assert leftovers() == []  # exists() removed the dead writer's folder
    assert write("B") == 0 and artifacts.metadata("demo", "tiny")["version"] == "B"


@pytest.mark.parametrize("kill", ["during-weights", "before-swap", "between-renames", "before-old-deleted"])
def test_a_rebuild_killed_at_any_point_keeps_a_complete_copy(kill):
    assert write("A") == 0
    assert write("B", kill) == -9
    assert artifacts.exists("demo", "tiny"), f"killed {kill}: no complete copy left"
    version = artifacts.metadata("demo", "tiny")["version"]
    # before the swap the old copy stays; after the new one is in place, the new one counts
    assert version == ("B" if kill == "before-old-deleted" else "A")
    assert (folder() / "weights.bin").read_bytes() == version.encode() * 1000
    assert leftovers() == [] and artifacts.list_artifacts("tiny") == ["demo"]
    assert write("C") == 0 and artifacts.metadata("demo", "tiny")["version"] == "C"


def test_a_truncated_file_is_damage_with_a_clear_message_and_is_rebuilt():
    assert write("A") == 0
    weights = folder() / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:100])
    assert not artifacts.exists("demo", "tiny")
    with pytest.raises(artifacts.DamagedArtifactError, match=r"weights.bin has 100 bytes.*companion build demo --rebuild"):
        artifacts.metadata("demo", "tiny")
    calls = []
    artifacts.get_or_build("demo", lambda out: calls.append(out) or {"version": "R"}, profile_name="tiny")
    assert calls and artifacts.metadata("demo", "tiny")["version"] == "R"


def test_unreadable_metadata_is_damage():
    assert write("A") == 0
    (folder() / artifacts.META_FILE).write_text('{"name": "demo", "fil')
    assert not artifacts.exists("demo", "tiny")
    with pytest.raises(artifacts.DamagedArtifactError, match="artifact.json cannot be read"):
        artifacts.metadata("demo", "tiny")


def test_a_missing_file_is_damage_and_old_caches_without_a_manifest_still_load():
    assert write("A") == 0
    (folder() / "config.json").unlink()
    with pytest.raises(artifacts.DamagedArtifactError, match="config.json is missing"):
        artifacts.metadata("demo", "tiny")
    meta = json.loads((folder() / artifacts.META_FILE).read_text())
    del meta["files"]  # as written by earlier versions of the book
    (folder() / artifacts.META_FILE).write_text(json.dumps(meta))
    assert artifacts.exists("demo", "tiny")


def test_recovery_touches_only_its_own_artifact(tmp_path):
    assert write("A") == 0
    parent = folder().parent
    # a dead rebuild of another artifact whose name starts the same ("demo-2") must not become "demo"
    other = parent / ".old-demo-2-999999999-abc"
    other.mkdir()
    (other / artifacts.META_FILE).write_text("{}")
    artifacts.remove("demo", "tiny")
    assert not artifacts.exists("demo", "tiny")
    assert other.exists() and not folder().exists()

"""The built book in headless Chromium: a localhost server for it, and a skip when it cannot run.

Every test here is skipped, with the command to run, when ``_build/html`` is not built or no
Chromium is installed (``make test`` builds the book first; ``.ci/run`` installs Debian's chromium).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from book_site import CHROMIUM, HTML, ROOT


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    why = None
    if not (HTML / "book" / "10_capstone.html").exists():
        why = f"{HTML.relative_to(ROOT)} is not built: run `make build-check` (or `make book`) first"
    elif not CHROMIUM.exists():
        why = f"no browser at {CHROMIUM}: apt-get install -y --no-install-recommends chromium (or set $CHROMIUM)"
    if why:
        for item in items:
            if Path(str(item.fspath)).parent == here:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def server():
    """The built book served on 127.0.0.1 (a free port) for the session; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(HTML)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

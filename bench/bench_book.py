"""Seconds and peak memory of executing every chapter of the book, one notebook after another.

Each notebook of ``book/`` is executed with nbclient, in the Makefile's order (chapter 9
before chapter 8: chapter 8 reuses chapter 9's cached DPO data), in a fresh ``python3``
kernel whose working directory is the notebooks' folder, as ``make notebooks`` runs them.
Per chapter: the wall-clock seconds of the whole execution (kernel start included) and the
peak resident memory of the kernel process with all its children (the sum of their RSS,
sampled with psutil every ``INTERVAL_S`` seconds; shared pages count once per process, so this
errs high).  A chapter that raises is recorded with its error and the run goes on.

The artifact cache (``COMPANION_CACHE``) decides what the run measures: cold (empty cache:
every chapter trains what it needs) or warm (everything cached).  The caller says which with
``--label`` (default: ``cold`` when the active profile has no cached artifact, else ``warm``).
Targets: each chapter under 6 minutes and under 4 GiB; the whole book under 45 minutes cold.

Writes ``bench/results/book_<label>.json`` (machine, threads, versions, per chapter seconds
and peak MiB, total) and a bar chart ``bench/results/book_<label>.png``, and prints a Markdown
table.  Run: ``python -m bench.bench_book --label cold`` (or ``warm``); ``--only 02,06`` runs the
chapters whose file names start with those prefixes.  It takes as long as the book: it is not
in ``python -m bench``'s default set (``python -m bench book`` runs it with the default label).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
RESULTS = Path(__file__).parent / "results"
INTERVAL_S = 0.2
TIMEOUT_S = 1800  # per cell, as make notebooks (--nbval-cell-timeout=1800)
CHAPTER_TARGET_S = 6 * 60
CHAPTER_TARGET_MIB = 4 * 1024
BOOK_TARGET_S = 45 * 60  # cold cache
MOVED = ("08_rlaif.ipynb", "09_dpo.ipynb")  # the Makefile runs 08 right after 09


def notebook_order(folder: Path = BOOK, only: list[str] | None = None) -> list[Path]:
    """The notebooks of ``folder`` in the Makefile's order; ``only``: file-name prefixes to keep."""
    paths = sorted(Path(folder).glob("*.ipynb"))
    moved, after = MOVED
    names = [p.name for p in paths]
    if moved in names and after in names:
        paths = [p for p in paths if p.name != moved]
        paths.insert([p.name for p in paths].index(after) + 1, Path(folder) / moved)
    if only:
        paths = [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]
    return paths


class MemorySampler:
    """Peak RSS of a kernel process and its children, sampled in a thread while nbclient runs it.

    The kernel's pid is read from the client's kernel manager once it has started.
    """

    def __init__(self, client, interval: float = INTERVAL_S):
        self.client, self.interval = client, interval
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pid(self) -> int | None:
        km = getattr(self.client, "km", None)
        process = getattr(getattr(km, "provisioner", None), "process", None)
        return getattr(process, "pid", None)

    def _run(self) -> None:
        import psutil

        proc = None
        while not self._stop.is_set():
            if proc is None or not proc.is_running():
                pid = self._pid()
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid) if pid else None
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    total = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            total += child.memory_info().rss
                    self.peak_bytes = max(self.peak_bytes, total)
                    self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_notebook(path: Path, workdir: Path, timeout: int = TIMEOUT_S, interval: float = INTERVAL_S) -> dict:
    """Execute one notebook in a fresh kernel: seconds, peak MiB, and the error if a cell raised."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    error = None
    start = time.perf_counter()
    with MemorySampler(client, interval) as memory:
        try:
            client.execute()
        except Exception as e:  # a failing chapter is reported, and the next one still runs
            error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    seconds = time.perf_counter() - start
    return {"notebook": path.name, "seconds": seconds, "peak_mib": memory.peak_bytes / 2**20,
            "samples": memory.samples, "error": error}


def environment() -> dict:
    """Machine, threads and library versions, without importing the libraries into this process."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "trl", "accelerate", "peft", "datasets", "nbclient", "ipykernel"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {"machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
            "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "versions": versions}


def default_label() -> str:
    """``cold`` when the active profile has no cached artifact, else ``warm``."""
    from companion.artifacts import list_artifacts

    return "warm" if list_artifacts(os.environ.get("COMPANION_PROFILE") or None) else "cold"


def markdown(result: dict) -> str:
    def mark(ok: bool | None) -> str:
        return "" if ok is None else (" ✓" if ok else " ✗")

    lines = [f"Book execution, {result['label']} cache ({result['machine']['cpu']}, {result['threads']} threads)", "",
             f"| chapter | seconds (< {CHAPTER_TARGET_S}) | peak MiB (< {CHAPTER_TARGET_MIB}) | error |",
             "|---|---:|---:|---|"]
    for c in result["chapters"]:
        lines.append(f"| {c['notebook']} | {c['seconds']:.1f}{mark(c['within_time'])} | "
                     f"{c['peak_mib']:.0f}{mark(c['within_memory'])} | {c['error'] or ''} |")
    target = f"< {BOOK_TARGET_S}" if result["total_target_s"] else "(target for a cold cache only)"
    lines.append(f"| **total** | {result['total_seconds']:.1f}{mark(result['total_within_target'])} {target} | "
                 f"{result['max_peak_mib']:.0f} (max) | |")
    return "\n".join(lines)


def chart(result: dict, path: Path) -> None:
    """Two bar charts, seconds and peak MiB per chapter, with the targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["notebook"].removesuffix(".ipynb") for c in result["chapters"]]
    fig, (ax_t, ax_m) = plt.subplots(2, 1, figsize=(max(6, 0.7 * len(names) + 2), 6), sharex=True)
    colors = ["tab:red" if c["error"] else "tab:blue" for c in result["chapters"]]
    ax_t.bar(names, [c["seconds"] for c in result["chapters"]], color=colors)
    ax_t.axhline(CHAPTER_TARGET_S, ls="--", color="gray", label=f"target {CHAPTER_TARGET_S // 60} min")
    ax_t.set_ylabel("seconds")
    ax_t.legend(loc="upper left")
    ax_t.set_title(f"Executing the book, {result['label']} cache: {result['total_seconds'] / 60:.1f} min in all")
    ax_m.bar(names, [c["peak_mib"] for c in result["chapters"]], color=colors)
    ax_m.axhline(CHAPTER_TARGET_MIB, ls="--", color="gray", label=f"target {CHAPTER_TARGET_MIB // 1024} GiB")
    ax_m.set_ylabel("peak resident MiB")
    ax_m.legend(loc="upper left")
    ax_m.tick_params(axis="x", labelrotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_book(notebooks: list[Path], label: str, workdir: Path | None = None, out_dir: Path = RESULTS,
             timeout: int = TIMEOUT_S, interval: float = INTERVAL_S) -> dict:
    """Execute ``notebooks`` one after another (in ``workdir``, default their folder); write JSON and chart."""
    if not notebooks:
        raise ValueError("no notebooks to run: check the folder and the --only prefixes")
    workdir = Path(workdir or notebooks[0].parent)
    chapters = []
    for path in notebooks:
        print(f"executing {path.name} ...", flush=True)
        row = run_notebook(path, workdir, timeout, interval)
        row["within_time"] = row["seconds"] < CHAPTER_TARGET_S
        row["within_memory"] = row["peak_mib"] < CHAPTER_TARGET_MIB
        chapters.append(row)
        print(f"  {row['seconds']:.1f} s, peak {row['peak_mib']:.0f} MiB" + (f", {row['error']}" if row["error"] else ""),
              flush=True)
    total = sum(c["seconds"] for c in chapters)
    cold = label.startswith("cold")
    result = {"label": label, "notebooks": [str(p) for p in notebooks], "workdir": str(workdir),
              "cache": os.environ.get("COMPANION_CACHE"), "profile": os.environ.get("COMPANION_PROFILE"),
              "sample_interval_s": interval, "chapters": chapters, "total_seconds": total,
              "max_peak_mib": max(c["peak_mib"] for c in chapters),
              "targets": {"chapter_seconds": CHAPTER_TARGET_S, "chapter_peak_mib": CHAPTER_TARGET_MIB,
                          "book_seconds_cold": BOOK_TARGET_S},
              "total_target_s": BOOK_TARGET_S if cold else None,
              "total_within_target": total < BOOK_TARGET_S if cold else None,
              "chapters_within_targets": all(c["within_time"] and c["within_memory"] for c in chapters),
              "errors": sum(c["error"] is not None for c in chapters), **environment()}
    result["table"] = markdown(result)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"book_{label}.json").write_text(json.dumps(result, indent=1))
    chart(result, out_dir / f"book_{label}.png")
    print(result["table"])
    print("wrote", out_dir / f"book_{label}.json", "and", out_dir / f"book_{label}.png")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default=None, help="cold or warm (the state of the artifact cache); default: guessed")
    ap.add_argument("--only", default=None, help="comma-separated file-name prefixes, e.g. 02,06")
    ap.add_argument("--folder", default=str(BOOK), help="the notebooks' folder (default: book/)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per cell")
    args = ap.parse_args(argv if argv is not None else [])
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    label = args.label or default_label()
    result = run_book(notebook_order(Path(args.folder), only), label, out_dir=Path(args.out_dir), timeout=args.timeout)
    return {"label": label, "total_seconds": round(result["total_seconds"], 1),
            "total_target_s": result["total_target_s"], "total_within_target": result["total_within_target"],
            "max_peak_mib": round(result["max_peak_mib"]), "chapters_within_targets": result["chapters_within_targets"],
            "errors": result["errors"]}


if __name__ == "__main__":
    main(sys.argv[1:])

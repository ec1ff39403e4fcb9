"""Run every benchmark in turn, then print one Markdown table of their headline numbers: ``python -m bench``.

``python -m bench NAME ...`` runs only those.  ``gpu`` (bench/gpu.py) and ``book`` (bench/bench_book.py)
run only when named: on a GPU ``gpu`` measures for minutes (without one it would only do its dry
run), and ``book`` executes every notebook of the book (up to 45 minutes; its label, cold or
warm, is guessed from the artifact cache: ``python -m bench.bench_book --label cold`` says it).

Every benchmark's result ends up in ``bench/results/<name>.json``: the benchmarks that write
their own file (with the machine, threads and library versions) keep it; for the others this
runner writes the returned result with the same environment fields.  A benchmark that raises
is reported in the table and the others still run (exit status 1).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from bench import (
    bench_book,
    bench_generation,
    bench_pretrain_throughput,
    bench_rl_rollouts,
    bench_rlaif_judge,
    bench_shakespeare_char,
    bench_trainer_overhead,
    gpu,
)

BENCHES = {
    "pretrain_throughput": bench_pretrain_throughput.main,
    "trainer_overhead": bench_trainer_overhead.main,
    "shakespeare_char": bench_shakespeare_char.main,
    "rl_rollouts": bench_rl_rollouts.main,
    "rlaif_judge": bench_rlaif_judge.main,
    "generation": bench_generation.main,
}
ON_REQUEST = {"gpu": gpu.main, "book": bench_book.main}  # not in the default set
# the benchmarks that write bench/results/<their file>.json themselves
WRITES_OWN = {"trainer_overhead", "rl_rollouts", "rlaif_judge", "generation", "gpu", "book"}
RESULTS = Path(__file__).parent / "results"


def _num(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def headlines(name: str, r: dict) -> list[tuple[str, str, str, bool | None]]:
    """(what, value, target, met) rows for one benchmark's result; met is None without a target."""
    if "error" in r and len(r) == 1:
        return [("failed", r["error"], "", False)]
    if "skipped" in r:
        return [("skipped", r["skipped"], "", None)]
    if name == "pretrain_throughput":
        return [("companion pretrain / hand loop, tokens/s", _num(r["ratio"]), f">= {r['target']}",
                 r["ratio"] >= r["target"])]
    if name == "trainer_overhead":
        label = {"sft": "SFTTrainer (train_sft)", "reward": "RewardTrainer (train_reward_model)"}
        return [(f"{label.get(k, k)} / hand loop, tokens/s", _num(v["ratio"]), f">= {v['target']}",
                 v["ratio"] >= v["target"]) for k, v in r.items()]
    if name == "shakespeare_char":
        return [("char-level validation loss", _num(r["val_loss"]), f"< {r['nanogpt_val_loss']} (nanoGPT)",
                 bool(r["beats_nanogpt"]))]
    if name == "rl_rollouts":
        ratio = r["ratio_ours_over_trl"]
        return [("PPOTrainer / TRL RLOO, rollout completions/s", _num(ratio["rollout_samples_per_s"]), "", None),
                ("PPOTrainer / TRL RLOO, update tokens/s", _num(ratio["update_tokens_per_s"]), "", None)]
    if name == "rlaif_judge":
        return [("judge time without / with its cache", _num(r["ratio_no_cache_over_cached"]), "same rankings",
                 bool(r["same_rankings"]))]
    if name == "generation":
        return [(f"static / dynamic cache tokens/s, {k}", _num(v, ".2f"), "", None)
                for k, v in r["static_over_dynamic"].items()]
    if name == "gpu":
        rows = [(f"SFT tokens/s on {r['device']}" + (" (dry run)" if r["dry_run"] else ""),
                 _num(r["sft_tokens_per_s"], ".0f"), "", None)]
        rows += [(k.replace("_", " "), _num(r[k]), "", None) for k in ("sft_mfu", "ppo_update_mfu") if k in r]
        return rows
    if name == "book":
        cold = r["total_target_s"] is not None
        return [(f"book execution ({r['label']} cache), seconds", _num(r["total_seconds"], ".0f"),
                 f"< {r['total_target_s']}" if cold else "", r["total_within_target"] if cold else None),
                ("every chapter < 6 min and < 4 GiB (peak MiB: max)", _num(r["max_peak_mib"], ".0f"), "all chapters",
                 bool(r["chapters_within_targets"]) and not r["errors"])]
    if "ratio" in r:  # a benchmark added later: its ratio and target, if it has them
        return [("ratio", _num(r["ratio"]), f">= {r['target']}" if "target" in r else "",
                 r["ratio"] >= r["target"] if "target" in r else None)]
    return [("(see its JSON)", "", "", None)]


def summary_table(results: dict[str, dict]) -> str:
    lines = ["| benchmark | headline | value | target | met |", "|---|---|---:|---|---|"]
    for name, r in results.items():
        try:
            rows = headlines(name, r)
        except (KeyError, TypeError) as e:  # a result without the expected fields: say so, keep the table
            rows = [(f"(no headline: {type(e).__name__} {e})", "", "", None)]
        for what, value, target, met in rows:
            mark = "" if met is None else ("yes" if met else "**no**")
            lines.append(f"| {name} | {what} | {value} | {target} | {mark} |")
    return "\n".join(lines)


def save(name: str, result: dict) -> Path:
    """Write ``result`` to bench/results/<name>.json with the machine, threads and versions."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**result, **bench_rl_rollouts.environment()}, indent=1, default=str))
    return path


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    known = {**BENCHES, **ON_REQUEST}
    unknown = [b for b in chosen if b not in known]
    if unknown:
        print(f"unknown bench {unknown}; choose from {sorted(known)}", file=sys.stderr)
        return 2
    results, failed = {}, False
    for name in chosen:
        try:
            results[name] = known[name]()
        except Exception as e:  # report it, and run the other benchmarks
            traceback.print_exc()
            results[name], failed = {"error": f"{type(e).__name__}: {e}"}, True
            continue
        if name not in WRITES_OWN:
            print("wrote", save(name, results[name]))
    print(json.dumps(results, indent=2, default=str))
    print()
    print(summary_table(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

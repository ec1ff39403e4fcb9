"""Run every benchmark in turn and print one summary line each: ``python -m bench``.

``python -m bench NAME ...`` runs only those.  ``gpu`` (bench/gpu.py) runs only when named: on a GPU it
measures for minutes, and without one it would only do its dry run.
"""

from __future__ import annotations

import json
import sys

from bench import (
    bench_generation,
    bench_pretrain_throughput,
    bench_rl_rollouts,
    bench_rlaif_judge,
    bench_shakespeare_char,
    gpu,
)

BENCHES = {
    "pretrain_throughput": bench_pretrain_throughput.main,
    "shakespeare_char": bench_shakespeare_char.main,
    "rl_rollouts": bench_rl_rollouts.main,
    "rlaif_judge": bench_rlaif_judge.main,
    "generation": bench_generation.main,
}
ON_REQUEST = {"gpu": gpu.main}  # not in the default set


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    known = {**BENCHES, **ON_REQUEST}
    unknown = [b for b in chosen if b not in known]
    if unknown:
        print(f"unknown bench {unknown}; choose from {sorted(known)}", file=sys.stderr)
        return 2
    results = {name: known[name]() for name in chosen}
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

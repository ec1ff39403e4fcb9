"""Run every benchmark in turn and print one summary line each: ``python -m bench``."""

from __future__ import annotations

import json
import sys

from bench import bench_pretrain_throughput, bench_rl_rollouts, bench_rlaif_judge, bench_shakespeare_char

BENCHES = {
    "pretrain_throughput": bench_pretrain_throughput.main,
    "shakespeare_char": bench_shakespeare_char.main,
    "rl_rollouts": bench_rl_rollouts.main,
    "rlaif_judge": bench_rlaif_judge.main,
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        print(f"unknown bench {unknown}; choose from {sorted(BENCHES)}", file=sys.stderr)
        return 2
    results = {name: BENCHES[name]() for name in chosen}
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

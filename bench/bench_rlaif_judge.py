"""Cost of AI labels: the tiny profile's encoder judge ranking k answers per prompt, with and without its embedding cache.

``rlaif.rank_answers`` asks the judge about every pair of a prompt's answers, under every
principle, in both orders: with k = 4 answers and 3 principles that is 36 verdicts per
prompt, each of which needs the embeddings of the prompt and of two answers.  The judge keeps
an embedding per text, so each text is encoded once.  This measures, in one run on the same
records, the labelling time with the cache and with it cleared before every verdict (what a
judge without a cache would pay), and reports the ratio and the verdicts per second.

The records are the SFT model's answers that chapter 9 ranks (``pipeline.dpo_rankings``) when
the "dpo" artifact is cached, else tiny-world training stories paired at random.  Writes
``bench/results/rlaif_judge.json``.  Run: ``python -m bench.bench_rlaif_judge [--prompts 16]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


class NoCacheJudge:
    """The same judge, with its embedding cache emptied before every call."""

    def __init__(self, judge):
        self.judge = judge

    def prob_first(self, prompts, firsts, seconds, principle):
        self.judge._cache.clear()
        return self.judge.prob_first(prompts, firsts, seconds, principle)


def records(n: int) -> tuple[list[dict], str]:
    from companion import artifacts, pipeline, tinyworld
    from companion.data import load_dataset

    if artifacts.exists("dpo"):
        return pipeline.dpo_rankings()[:n], "the SFT model's answers (artifact dpo)"
    rng = random.Random(0)
    texts = list(load_dataset("tinystories", split="train", limit=4 * n)["text"])
    specs = tinyworld.make_instructions(n, seed=0)
    return [{"prompt": s.messages(), "answers": rng.sample(texts, 4)} for s in specs], "TinyStories stories"


def main(argv: list[str] | None = None) -> dict:
    from companion import rlaif

    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=16)
    args = parser.parse_args(argv or [])
    recs, source = records(args.prompts)
    judge = rlaif.encoder_judge()
    verdicts = sum(len(r["answers"]) * (len(r["answers"]) - 1) // 2 for r in recs) * 2 * len(rlaif.TINY_CONSTITUTION)
    timings = {}
    for name, j in (("cached", judge), ("no_cache", NoCacheJudge(judge))):
        judge._cache.clear()
        t0 = time.perf_counter()
        ranked = rlaif.rank_answers(j, recs, rlaif.TINY_CONSTITUTION)
        timings[name] = time.perf_counter() - t0
        timings[f"{name}_tiers"] = [r["tiers"] for r in ranked]
    same = timings.pop("cached_tiers") == timings.pop("no_cache_tiers")
    out = {"machine": f"{platform.processor() or platform.machine()}, {platform.system()}", "records": source,
           "prompts": len(recs), "verdicts": verdicts, "seconds": timings,
           "verdicts_per_s": {k: verdicts / v for k, v in timings.items()},
           "ratio_no_cache_over_cached": timings["no_cache"] / timings["cached"], "same_rankings": same}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rlaif_judge.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()

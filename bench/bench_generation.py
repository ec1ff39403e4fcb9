"""Generation speed: no KV cache, transformers' default (dynamic) cache, and a static cache.

Greedy decoding with ``model.generate`` on the CPU, in one run: every configuration is timed
``--rounds`` times, alternating, after a warm-up, and the median is kept.  The prompts of a
batch differ in length and are left-padded, as the book's evaluations batch them.  Models: the tiny
profile's SFT model (cached artifact, else the same architecture with random weights) and a
SmolLM2-135M-sized Llama with random weights (the gpu profile's size).  Batches of 1 and 16
(and 64, for the tiny model), 200 new tokens as in the book's evaluations (24 for the 135M model).  Every cache
setting must produce exactly the same tokens (no cache: batches up to 16 only, it is slow).  Reports new tokens per second
and the ratios; writes ``bench/results/generation.json``.
Run: ``python -m bench.bench_generation [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
SETTINGS = {"no cache": {"use_cache": False}, "dynamic cache": {}, "static cache": {"cache_implementation": "static"}}


def models() -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from companion import artifacts, pipeline
    from companion.models import build_causal_lm

    if artifacts.exists("sft"):
        tiny, tok = pipeline.sft_model()
        tiny_name = "tiny SFT model (cached artifact)"
    else:
        tok = pipeline.tokenizer()
        tiny, tiny_name = build_causal_lm(tok), "tiny architecture, random weights"
    torch.manual_seed(0)
    smol = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                                        tie_word_embeddings=True))
    # (model, batch sizes, new tokens): the 135M model without a cache re-reads the whole prefix at every
    # token, so it writes fewer tokens to keep the benchmark to a few minutes
    return {tiny_name: (tiny.eval(), [1, 16, 64], 200), "SmolLM2-135M-sized Llama, random weights": (smol.eval(), [1, 16], 24)}


def prompts(batch: int, length: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of different lengths (``length`` down to ``length - 7``), left-padded as in a real batch."""
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    for i in range(batch):
        mask[i, :i % 8] = 0
    return ids.masked_fill(mask == 0, 0), mask


def book_evaluation(rounds: int) -> dict | None:
    """The workload that matters: the tiny SFT model answering the 250 held-out prompts (batches of 100, greedy)."""
    from companion import artifacts, pipeline, sft, tinyworld

    if not artifacts.exists("sft"):
        return None
    model, tok = pipeline.sft_model()
    convs = [s.messages() for s in tinyworld.held_out_prompts(250)]
    seconds, answers = {"dynamic": [], "static": []}, {}
    for _ in range(rounds):
        for impl in seconds:
            t0 = time.perf_counter()
            answers[impl] = sft.chat_responses(model, tok, convs, batch_size=100, cache_implementation=impl)
            seconds[impl].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    row = {"workload": "tiny SFT model, 250 held-out prompts, batches of 100, greedy, 200 new tokens at most",
           "seconds": median, "static_over_dynamic": median["dynamic"] / median["static"],
           "identical_answers": answers["dynamic"] == answers["static"]}
    print(f"book evaluation: dynamic {median['dynamic']:.1f} s, static {median['static']:.1f} s, "
          f"static/dynamic {row['static_over_dynamic']:.2f}, identical={row['identical_answers']}", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    args = ap.parse_args(argv if argv is not None else [])

    rows = []
    for name, (model, batches, new_tokens) in models().items():
        vocab = model.config.vocab_size
        for batch in batches:
            ids, mask = prompts(batch, args.prompt_tokens, vocab)
            run = dict(input_ids=ids, attention_mask=mask, do_sample=False,
                       max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
            # without a cache every token re-reads the prefix: measured up to batch 16 only (minutes above)
            settings = {s: kw for s, kw in SETTINGS.items() if s != "no cache" or batch <= 16}
            outputs, seconds = {}, {s: [] for s in settings}
            with torch.no_grad():
                for setting, kw in settings.items():  # warm-up, and the tokens each setting writes
                    outputs[setting] = model.generate(**run, **kw)
                for _ in range(args.rounds):
                    for setting, kw in settings.items():
                        t0 = time.perf_counter()
                        model.generate(**run, **kw)
                        seconds[setting].append(time.perf_counter() - t0)
            same = all(torch.equal(outputs[s], next(iter(outputs.values()))) for s in settings)
            tps = {s: batch * new_tokens / statistics.median(v) for s, v in seconds.items()}
            rows.append({"model": name, "batch": batch, "new_tokens": new_tokens, "tokens_per_s": tps,
                         "identical_tokens": same,
                         "static_over_dynamic": tps["static cache"] / tps["dynamic cache"],
                         "dynamic_over_no_cache": tps["dynamic cache"] / tps["no cache"] if "no cache" in tps else None})
            print(f"{name[:40]:40s} batch {batch:3d}: " + "  ".join(f"{s} {v:8.0f} tok/s" for s, v in tps.items())
                  + f"  static/dynamic {rows[-1]['static_over_dynamic']:.2f}  identical={same}", flush=True)
    evaluation = book_evaluation(max(args.rounds, 3))
    result = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "prompt_tokens": args.prompt_tokens,
              "rounds": args.rounds, "rows": rows, "book_evaluation": evaluation}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "generation.json").write_text(json.dumps(result, indent=1))
    assert all(r["identical_tokens"] for r in rows), "a cache setting changed the greedy tokens"
    assert evaluation is None or evaluation["identical_answers"], "the static cache changed the evaluation's answers"
    summary = {f"{r['model'][:20]} b{r['batch']}": round(r["static_over_dynamic"], 2) for r in rows}
    if evaluation:
        summary["book evaluation"] = round(evaluation["static_over_dynamic"], 2)
    return {"static_over_dynamic": summary}


if __name__ == "__main__":
    main(__import__("sys").argv[1:])

"""Rollout and update throughput of our ``companion.ppo.PPOTrainer`` versus TRL's ``RLOOTrainer``.

Same model, same prompts (tiny-world instructions), same batch of 32 completions per step
(PPO: 32 prompts, one response each; RLOO: 8 prompts x 4 completions), same
``max_new_tokens`` (200), sampling at temperature 1.0 with top-k/top-p off, one update
epoch of one optimizer step per batch, KL coefficient 0.05 against a frozen reference on
both sides, fp32, and the same programmatic reward (the tiny world's gold judge).

What is timed, per step (``time.perf_counter``, after a CUDA sync on a GPU):

* rollout: PPO's ``rollout()``; TRL's ``_generate_and_score_completions`` (timed in a
  subclass).  Both: tokenize the prompts, sample, decode, policy and reference log-probs
  (PPO also the values), rewards.  Reported as completions per second.
* generation: the ``generate`` call alone inside the rollout (the policy's ``generate``,
  wrapped), as completions per second.
* update: PPO's ``update()`` (advantages, forward + backward with value loss, optimizer
  step); TRL's optimizer step (``on_step_begin`` to ``on_step_end``) minus its rollout.
  Reported as tokens per second, the non-padding prompt + completion tokens of the batch
  (the forward/backward runs on the padded batch on both sides).

Each side gets a fresh trainer from the same initial weights per round; the first ``SKIP``
steps of each run are discarded, the rounds alternate the order (ours, TRL, TRL, ours, ...)
and the medians over rounds are compared.  The model is the cached tiny SFT model when
``companion.artifacts.exists("sft")`` (``COMPANION_CACHE``), else a random model of the tiny
profile's size.  Writes ``bench/results/rl_rollouts.json`` (``--quick``: a seconds-long smoke
run, written to ``rl_rollouts_quick.json``).  Run: ``OMP_NUM_THREADS=2 python -m bench.bench_rl_rollouts``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import RLOOTrainer

from companion import artifacts, critic_free, tinyworld
from companion.data import load_dataset
from companion.models import build_causal_lm
from companion.ppo import PPOConfig, PPOTrainer
from companion.profiles import profile
from companion.tokenizer import ensure_distinct_pad, train_bpe_tokenizer

RESULTS = Path(__file__).parent / "results"
FULL = dict(batch=32, per_prompt=4, max_new_tokens=200, steps=5, skip=1, rounds=3, prompts=64)
QUICK = dict(batch=8, per_prompt=4, max_new_tokens=16, steps=2, skip=1, rounds=2, prompts=16)
KL_COEF = 0.05


# --------------------------------------------------------------------------- setup
def bench_model() -> tuple[torch.nn.Module, object, str]:
    """(model, tokenizer, description): the cached tiny SFT model, or a random tiny-profile model."""
    p = profile("tiny")
    if artifacts.exists("sft", p.name):
        path = artifacts.artifact_dir("sft", p.name)
        model, tok = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        what = f"cached tiny SFT model ({path})"
    else:
        if artifacts.exists("tokenizer", p.name):
            tok = AutoTokenizer.from_pretrained(artifacts.artifact_dir("tokenizer", p.name))
            source = "the cached tiny tokenizer"
        else:
            tok, source = small_tokenizer(p.vocab_size)
        model = build_causal_lm(tok, p)
        what = f"random tiny-profile model with {source}"
    ensure_distinct_pad(tok, model)
    n = sum(x.numel() for x in model.parameters())
    return model.float(), tok, f"{what}: {n / 1e6:.2f}M parameters, vocabulary {len(tok)}"


def small_tokenizer(vocab_size: int):
    """A BPE trained here: on 2,000 TinyStories if the sample data is there, else on tiny-world text."""
    try:
        texts = list(load_dataset("tinystories", split="train", limit=2000, local_only=True)["text"])
        source = "a BPE trained here on 2,000 TinyStories"
    except FileNotFoundError:
        specs = tinyworld.make_instructions(1000)
        texts = [s.instruction for s in specs] + [
            f"{s.name} had a {s.topic}. They played all day and were very happy." for s in specs]
        source = "a BPE trained here on tiny-world text"
    return train_bpe_tokenizer(texts, vocab_size=vocab_size), source


def timed_generate(model, times: list[float]) -> None:
    """Make ``model.generate`` append its wall time to ``times``."""
    original = type(model).generate

    def generate(*args, **kwargs):
        _sync()
        t = time.perf_counter()
        out = original(model, *args, **kwargs)
        _sync()
        times.append(time.perf_counter() - t)
        return out

    model.generate = generate


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@dataclass
class Run:
    """Per-step measurements of one run (warm-up steps already dropped)."""

    rollout_s: list[float]
    generate_s: list[float]
    update_s: list[float]
    tokens: list[int]
    lengths: list[float]

    def summary(self, batch: int) -> dict:
        return {"rollout_samples_per_s": batch * len(self.rollout_s) / sum(self.rollout_s),
                "generate_samples_per_s": batch * len(self.generate_s) / sum(self.generate_s),
                "update_tokens_per_s": sum(self.tokens) / sum(self.update_s),
                "rollout_s_per_step": statistics.mean(self.rollout_s),
                "update_s_per_step": statistics.mean(self.update_s),
                "mean_completion_length": statistics.mean(self.lengths)}


# --------------------------------------------------------------------------- the two sides
def run_ours(model, tok, prompts, size: dict) -> Run:
    cuda = torch.cuda.is_available()
    cfg = PPOConfig(steps=size["steps"], batch_size=size["batch"], num_mini_batches=1, num_ppo_epochs=1,
                    learning_rate=1e-4, max_new_tokens=size["max_new_tokens"], temperature=1.0, kl_coef=KL_COEF,
                    normalize_scores=False, missing_eos_penalty=None, use_cpu=not cuda)
    gold = critic_free.tinyworld_gold_func()
    tr = PPOTrainer(cfg, model, tok, prompts, reward_funcs=gold)
    gen: list[float] = []
    timed_generate(tr.policy, gen)
    run = Run([], [], [], [], [])
    for step in range(size["skip"] + size["steps"]):
        _sync()
        t0 = time.perf_counter()
        batch = tr.rollout(tr._next_rows(cfg.batch_size))
        _sync()
        t1 = time.perf_counter()
        tr.update(batch)
        _sync()
        t2 = time.perf_counter()
        if step >= size["skip"]:
            run.rollout_s.append(t1 - t0)
            run.generate_s.append(gen[-1])
            run.update_s.append(t2 - t1)
            run.tokens.append(int((batch.queries != tok.pad_token_id).sum() + batch.mask.sum()))
            run.lengths.append(float(batch.mask.sum(1).mean()))
    return run


class TimedRLOO(RLOOTrainer):
    """``RLOOTrainer`` that records the time and token counts of each rollout."""

    def _generate_and_score_completions(self, inputs):
        _sync()
        t = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        _sync()
        self.bench_rollout_s.append(time.perf_counter() - t)
        self.bench_tokens.append(int(out["prompt_mask"].sum() + out["completion_mask"].sum()))
        self.bench_lengths.append(float(out["completion_mask"].sum(1).float().mean()))
        return out


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (generation included), from ``on_step_begin`` to ``on_step_end``."""

    def __init__(self):
        self.steps: list[float] = []
        self._t = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        _sync()
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.steps.append(time.perf_counter() - self._t)


def run_trl(model, tok, prompts, size: dict) -> Run:
    with tempfile.TemporaryDirectory() as out:
        args = critic_free.rloo_config(
            out, profile=profile("tiny"), per_device_train_batch_size=size["batch"], gradient_accumulation_steps=1,
            num_generations=size["per_prompt"], max_completion_length=size["max_new_tokens"], beta=KL_COEF,
            max_steps=size["skip"] + size["steps"], learning_rate=1e-4, bf16=False, gradient_checkpointing=False,
            use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
        timer = StepTimer()
        tr = critic_free.build_trainer(TimedRLOO, model, tok, prompts, critic_free.tinyworld_gold_func(), args,
                                       callbacks=[timer])
        tr.remove_callback(PrinterCallback)
        tr.bench_rollout_s, tr.bench_tokens, tr.bench_lengths = [], [], []
        gen: list[float] = []
        timed_generate(tr.accelerator.unwrap_model(tr.model), gen)
        tr.train()
    k = size["skip"]
    rollout = tr.bench_rollout_s[k:]
    return Run(rollout, gen[k:], [s - r for s, r in zip(timer.steps[k:], rollout)], tr.bench_tokens[k:],
               tr.bench_lengths[k:])


# --------------------------------------------------------------------------- report
def environment() -> dict:
    import accelerate
    import peft
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    return {"machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
            "threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "trl": trl.__version__,
                         "accelerate": accelerate.__version__, "peft": peft.__version__}}


def markdown(ours: dict, trl_: dict) -> str:
    rows = [("rollout (completions/s)", "rollout_samples_per_s", ".2f"),
            ("generation only (completions/s)", "generate_samples_per_s", ".2f"),
            ("update (tokens/s)", "update_tokens_per_s", ".0f"),
            ("rollout s/step", "rollout_s_per_step", ".2f"),
            ("update s/step", "update_s_per_step", ".2f"),
            ("mean completion length", "mean_completion_length", ".1f")]
    lines = ["| median over rounds | ours (PPOTrainer) | TRL RLOOTrainer | ours / TRL |", "|---|---:|---:|---:|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {ours[key]:{fmt}} | {trl_[key]:{fmt}} | {ours[key] / trl_[key]:.2f} |")
    lines.append("\nThroughput rows: a ratio > 1 means ours is faster; s/step rows: < 1 means ours is faster.")
    return "\n".join(lines)


def main(quick: bool = False) -> dict:
    size = QUICK if quick else FULL
    if size["batch"] % size["per_prompt"]:
        raise ValueError(f"batch={size['batch']} must be a multiple of per_prompt={size['per_prompt']}")
    model, tok, what = bench_model()
    print("model:", what)
    prompts = tinyworld.prompt_dataset(tinyworld.make_instructions(size["prompts"]))
    print(f"batch: {size['batch']} completions per step (PPO: {size['batch']} prompts x 1; RLOO: "
          f"{size['batch'] // size['per_prompt']} prompts x {size['per_prompt']}), max_new_tokens="
          f"{size['max_new_tokens']}, {size['steps']} timed steps after {size['skip']} warm-up, "
          f"{size['rounds']} rounds, {torch.get_num_threads()} threads")
    warm = {**size, "steps": 1, "skip": 0}
    run_ours(copy.deepcopy(model), tok, prompts, warm)  # warm up allocator and kernels, discarded
    run_trl(copy.deepcopy(model), tok, prompts, warm)
    sides = {"ours": run_ours, "trl": run_trl}
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for r in range(size["rounds"]):  # ours, TRL | TRL, ours | ...: load drifts hit both sides alike
        for name in (["ours", "trl"] if r % 2 == 0 else ["trl", "ours"]):
            runs[name].append(sides[name](copy.deepcopy(model), tok, prompts, size).summary(size["batch"]))
    med = {name: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for name, rs in runs.items()}
    table = markdown(med["ours"], med["trl"])
    print(table)
    result = {"model": what, "setup": {**size, "temperature": 1.0, "kl_coef": KL_COEF, "update_epochs": 1,
                                       "reward": "tinyworld gold judge", "dtype": "float32"},
              "median": med, "ratio_ours_over_trl": {k: med["ours"][k] / med["trl"][k] for k in med["ours"]},
              "runs": runs, "table": table, **environment()}
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("rl_rollouts_quick.json" if quick else "rl_rollouts.json")
    out.write_text(json.dumps(result, indent=2))
    print("wrote", out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run (small batch, 16 tokens)")
    main(quick=parser.parse_args(sys.argv[1:]).quick)

"""Tokens/s of the companion's TRL trainers (SFT, reward) versus a minimal hand-written PyTorch loop.

Two pairs, each on the tiny profile's architecture (``companion.models.build_causal_lm`` with the
tiny profile's cached BPE tokenizer, ``companion.pipeline.tokenizer``), fp32 unless the profile says bf16:

* SFT: ``companion.sft.train_sft`` (TRL ``SFTTrainer``; on a CPU the companion's
  ``LogitsLossSFTTrainer``) on tiny-world demonstrations (``tinyworld.sft_dataset``) with
  ``sft.sft_config``'s defaults, versus a loop computing ``model(**batch).loss``.
* reward: ``companion.reward.train_reward_model`` (TRL ``RewardTrainer``) on a reward model made
  by ``reward.reward_model_from_causal_lm`` with ``reward.reward_config``'s defaults, versus a loop
  computing the Bradley-Terry loss ``-logsigmoid(r_chosen - r_rejected).mean()`` as TRL does.
  The pairs: a tiny-world prompt, its demonstration as the chosen answer and another
  demonstration as the rejected one.

What makes the comparison fair: the hand loop iterates the dataloader of a trainer built
exactly as the companion function builds it (``trainer.get_train_dataloader()``, seeded by
``data_seed``: the same batches in the same order, collated the same way, fetched inside the
timed step on both sides), trains that trainer's model (a second copy with the same initial
weights), and uses the Trainer's own optimizer choice (``Trainer.get_optimizer_cls_and_kwargs``:
AdamW, fused where available, the same betas/eps/lr and weight-decay groups), its learning-rate
schedule and its ``max_grad_norm`` clipping.  Both sides count the same tokens, the batch's
attention-mask tokens (the trainer side through ``include_num_input_tokens_seen="non_padding"``,
the only setting the benchmark adds to the companion's config); ``same_batches`` checks that the
two sides saw the same tokens at every step.

Timing: the two sides alternate step by step in one process.  A callback of the companion's
Trainer runs one hand-loop step between two Trainer steps (after the Trainer's step in even
rounds, before it in odd ones), so a change of machine load hits both sides alike.  A Trainer
step is the time from one ``on_step_end`` to the next minus the time spent in that callback, so
the Trainer's data loading, logging, progress bar and other callbacks count.  Each side's
tokens/s leaves out the first ``skip`` steps of a run; after a discarded warm-up run, ``rounds``
runs with fresh models, medians over rounds; ``ratio`` = companion / hand loop (target >= 0.9).
Two cross-checks: the median over steps of the per-step time ratio (the same batch on both
sides) and the ratio in CPU time (``time.process_time``), which a busy machine disturbs less.

Writes ``bench/results/trainer_overhead.json`` (``--quick``: ``trainer_overhead_quick.json``).
Run: ``python -m bench.bench_trainer_overhead [--quick] [--only sft|reward]`` or ``python -m bench
trainer_overhead``.  On a machine whose cores are busy with other work, set ``OMP_NUM_THREADS=1``:
with two threads on two busy cores a step took 5-10 times longer and varied 10-fold from step to step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, get_scheduler

RESULTS = Path(__file__).parent / "results"
STEPS = 16  # optimizer steps per timed run
SKIP = 3  # warm-up steps left out of every run, on both sides
WARMUP_STEPS = SKIP + 2  # the discarded warm-up run of each side
ROUNDS = 2
TARGET = 0.9
# the full run: the profile's batch and max_length (tiny: 16 x 256); measured 1.1 s (SFT) and 1.6 s (reward) a step
# with one thread on a busy 2-core CPU, under 4 minutes in all
FULL = dict(steps=STEPS, skip=SKIP, warmup_steps=WARMUP_STEPS, rounds=ROUNDS, batch=None, max_length=None)
# --quick: a smoke run (30 s with one thread on a busy 2-core CPU); smaller batches make the trainer's fixed
# cost per step weigh more, so its ratio is a pessimistic estimate of the full one
QUICK_STEPS = 6
QUICK = dict(steps=QUICK_STEPS, skip=2, warmup_steps=3, rounds=ROUNDS, batch=4, max_length=None)
TOKEN_SETTING = {"include_num_input_tokens_seen": "non_padding"}  # the trainer counts attention-mask tokens


def now() -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process, all threads): the CPU time is the cross-check
    that a busy machine disturbs less (it does not count the time the process waits for a core)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    end = now()
    return end[0] - start[0], end[1] - start[1]


class Interleaved(TrainerCallback):
    """Times every optimizer step of a Trainer run, and runs one step of a :class:`HandLoop` between two of them.

    The hand step runs inside this callback, at ``on_step_end`` in even rounds and at
    ``on_step_begin`` (after the Trainer has drawn its batch) in odd ones, so that the two sides
    alternate step by step and a change in machine load hits both.  A Trainer step is the time
    from one ``on_step_end`` to the next minus the time spent in this callback: it includes the
    Trainer's data loading, forward/backward, clipping, optimizer and scheduler steps, logging,
    progress bar and the other callbacks.  Tokens: ``state.num_input_tokens_seen`` (attention-mask
    tokens with ``include_num_input_tokens_seen="non_padding"``).
    """

    def __init__(self, hand: HandLoop | None, at: str = "end"):
        self.hand, self.at = hand, at
        self.marks: list[tuple[float, float]] = []
        self.paused: list[list[float]] = []  # [wall, cpu] spent in this callback since the previous mark
        self.tokens: list[int] = []

    def _pause(self, spent: tuple[float, float]) -> None:
        self.paused[-1] = [self.paused[-1][0] + spent[0], self.paused[-1][1] + spent[1]]

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks, self.paused, self.tokens = [now()], [[0.0, 0.0]], [state.num_input_tokens_seen]

    def on_step_begin(self, args, state, control, **kwargs):
        if self.at == "begin" and self.hand is not None:
            start = now()
            self.hand.step()
            self._pause(since(start))

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(now())
        self.tokens.append(state.num_input_tokens_seen)
        self.paused.append([0.0, 0.0])
        if self.at == "end" and self.hand is not None:
            self.hand.step()
        self._pause(since(self.marks[-1]))  # this callback's time, the hand step's included

    def steps(self) -> tuple[list[float], list[int], list[float]]:
        """(seconds, tokens, CPU seconds) of every Trainer step."""
        spans = list(zip(self.marks, self.marks[1:], self.paused))
        seconds = [b[0] - a[0] - pause[0] for a, b, pause in spans]
        cpu = [b[1] - a[1] - pause[1] for a, b, pause in spans]
        tokens = [b - a for a, b in zip(self.tokens, self.tokens[1:])]
        return seconds, tokens, cpu


def rate(seconds: list[float], tokens: list[int], skip: int = SKIP) -> float:
    """Steady-state tokens/s: the steps after the first ``skip``."""
    if len(seconds) <= skip:
        raise ValueError(f"a run of {len(seconds)} steps has no step left after the {skip} warm-up steps")
    return sum(tokens[skip:]) / sum(seconds[skip:])


# --------------------------------------------------------------------------- the hand-written loop
class HandLoop:
    """The plainest correct training loop on ``trainer``'s model and batches, one step per :meth:`step`.

    Only the data pipeline and the settings come from ``trainer``: its dataloader (seeded by
    ``data_seed``, so the same batches in the same order as the Trainer draws them), its
    optimizer class and arguments, its schedule, its gradient clipping and its autocast setting.
    """

    def __init__(self, trainer, loss_fn, steps: int):
        args, model = trainer.args, trainer.model
        self.args, self.model, self.loss_fn = args, model, loss_fn
        self.loader = trainer.get_train_dataloader()
        decay = set(trainer.get_decay_parameter_names(model))
        opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        groups = [{"params": [p for n, p in model.named_parameters() if p.requires_grad and n in decay],
                   "weight_decay": args.weight_decay},
                  {"params": [p for n, p in model.named_parameters() if p.requires_grad and n not in decay],
                   "weight_decay": 0.0}]
        self.opt = opt_cls(groups, **opt_kwargs)
        self.sched = get_scheduler(args.lr_scheduler_type, self.opt, num_warmup_steps=args.get_warmup_steps(steps),
                                   num_training_steps=steps)
        self.device_type = "cuda" if next(model.parameters()).is_cuda else "cpu"
        self.batches = None
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self.tokens: list[int] = []

    def next_batch(self):
        if self.batches is None:
            self.batches = iter(self.loader)
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch, as the Trainer would start one
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self) -> None:
        start = now()
        self.model.train()
        batch = self.next_batch()
        with torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=bool(self.args.bf16)):
            loss = self.loss_fn(self.model, batch)
        loss.backward()
        if self.args.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.tokens.append(int(batch["attention_mask"].sum()))
        wall, cpu = since(start)
        self.seconds.append(wall)
        self.cpu_seconds.append(cpu)


def lm_loss(model, batch):
    """The causal-LM loss on the collator's labels (-100 outside the assistant's tokens)."""
    return model(**batch, use_cache=False).loss


def bradley_terry_loss(model, batch):
    """TRL's reward loss: the batch holds the chosen rows, then the rejected ones."""
    rewards = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    chosen, rejected = torch.chunk(rewards.squeeze(-1), chunks=2)
    return -torch.nn.functional.logsigmoid(chosen - rejected).mean()


# --------------------------------------------------------------------------- the two workloads
class Workload:
    """One trainer of the companion and its hand-written counterpart, on the same data and settings."""

    name = ""
    loss_fn = staticmethod(lm_loss)

    def __init__(self, tok, p, size: dict):
        self.tok, self.p = tok, p
        self.overrides = {**TOKEN_SETTING, **({"per_device_train_batch_size": size["batch"]} if size["batch"] else {}),
                          **({"max_length": size["max_length"]} if size["max_length"] else {})}
        self.rows = (size["batch"] or p.batch_size) * (size["steps"] + 1)  # no epoch boundary inside a run

    def run(self, steps: int, at: str = "end") -> dict[str, tuple[list[float], list[int], list[float]]]:
        """One companion Trainer run and the hand loop on a second copy of the model, step by step."""
        with tempfile.TemporaryDirectory() as out:
            hand = HandLoop(self.trainer(self.model(), self.config(out, steps)), self.loss_fn, steps)
            timer = Interleaved(hand, at)
            self.train(self.model(), self.config(out, steps), [timer])
        return {"companion": timer.steps(), "hand": (hand.seconds, hand.tokens, hand.cpu_seconds)}


class SFTWorkload(Workload):
    """``companion.sft.train_sft`` on tiny-world demonstrations."""

    name = "sft"

    def __init__(self, tok, p, size: dict):
        from companion import tinyworld

        super().__init__(tok, p, size)
        self.data = tinyworld.sft_dataset(limit=self.rows).select_columns(["messages"])

    def config(self, out: str, steps: int):
        from companion import sft

        return sft.sft_config(out, profile=self.p, max_steps=steps, **self.overrides)

    def model(self):
        from companion.models import build_causal_lm

        return build_causal_lm(self.tok, self.p)

    def train(self, model, args, callbacks):
        from companion import sft

        sft.train_sft(model, self.tok, self.data, args=args, callbacks=callbacks)

    def trainer(self, model, args):
        from companion import sft

        # the class train_sft picks (on a CPU: the loss from the model's logits)
        cls = sft.LogitsLossSFTTrainer if (args.use_cpu or not torch.cuda.is_available()) else sft.SFTTrainer
        return cls(model=model, args=args, train_dataset=self.data, processing_class=self.tok)


class RewardWorkload(Workload):
    """``companion.reward.train_reward_model``: a tiny-world prompt, its demonstration as the chosen
    answer, the next row's demonstration as the rejected one."""

    name = "reward"
    loss_fn = staticmethod(bradley_terry_loss)

    def __init__(self, tok, p, size: dict):
        from datasets import Dataset

        from companion import tinyworld

        super().__init__(tok, p, size)
        convs = tinyworld.sft_dataset(limit=self.rows)["messages"]
        self.data = Dataset.from_list([
            {"prompt": conv[:-1], "chosen": [conv[-1]],
             "rejected": [{"role": "assistant", "content": convs[(i + 1) % len(convs)][-1]["content"]}]}
            for i, conv in enumerate(convs)])

    def config(self, out: str, steps: int):
        from companion import reward

        return reward.reward_config(out, self.p, max_steps=steps, **self.overrides)

    def model(self):
        from companion import reward
        from companion.models import build_causal_lm

        return reward.reward_model_from_causal_lm(build_causal_lm(self.tok, self.p), self.tok)

    def train(self, model, args, callbacks):
        from companion import reward

        reward.train_reward_model(model, self.tok, self.data, args=args, callbacks=callbacks)

    def trainer(self, model, args):
        from companion import reward

        return reward.RewardTrainer(model=model, args=args, train_dataset=self.data, processing_class=self.tok)


def measure(work: Workload, size: dict) -> dict:
    """A discarded warm-up run, then ``rounds`` runs of both sides alternating step by step; medians, ratio."""
    work.run(size["warmup_steps"])
    runs: dict[str, list[dict]] = {"hand": [], "companion": []}
    skip = size["skip"]
    for r in range(size["rounds"]):
        at = "end" if r % 2 == 0 else "begin"  # hand step after the Trainer's in even rounds, before in odd ones
        for side, (seconds, tokens, cpu) in work.run(size["steps"], at).items():
            runs[side].append({"tokens_per_s": rate(seconds, tokens, skip), "tokens_per_cpu_s": rate(cpu, tokens, skip),
                               "step_seconds": seconds, "step_cpu_seconds": cpu, "step_tokens": tokens})
        h, c = runs["hand"][-1], runs["companion"][-1]
        print(f"{work.name} round {r}: hand {h['tokens_per_s']:7.0f} tokens/s (median step "
              f"{statistics.median(h['step_seconds'][skip:]) * 1e3:.0f} ms), companion {c['tokens_per_s']:7.0f} "
              f"tokens/s ({statistics.median(c['step_seconds'][skip:]) * 1e3:.0f} ms); per CPU second: hand "
              f"{h['tokens_per_cpu_s']:.0f}, companion {c['tokens_per_cpu_s']:.0f}", flush=True)
    med = {side: {k: statistics.median(x[k] for x in rs) for k in ("tokens_per_s", "tokens_per_cpu_s")}
           for side, rs in runs.items()}
    same = all(h["step_tokens"] == c["step_tokens"] for h, c in zip(runs["hand"], runs["companion"]))
    # the same batch on both sides at every step: the per-step time ratio, robust to load spikes
    paired = [hs / cs for h, c in zip(runs["hand"], runs["companion"])
              for hs, cs in zip(h["step_seconds"][skip:], c["step_seconds"][skip:])]
    return {"companion_tokens_per_s": med["companion"]["tokens_per_s"],
            "hand_loop_tokens_per_s": med["hand"]["tokens_per_s"],
            "ratio": med["companion"]["tokens_per_s"] / med["hand"]["tokens_per_s"],
            "median_step_ratio": statistics.median(paired),
            "cpu_time_ratio": med["companion"]["tokens_per_cpu_s"] / med["hand"]["tokens_per_cpu_s"],
            "target": TARGET, "same_batches": same,
            "tokens_per_step": statistics.mean(runs["hand"][0]["step_tokens"]), "runs": runs}


def markdown(results: dict) -> str:
    lines = ["| trainer | companion tokens/s | hand loop tokens/s | ratio | median per-step ratio | CPU-time ratio "
             "| target | same batches |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['companion_tokens_per_s']:.0f} | {r['hand_loop_tokens_per_s']:.0f} | "
                     f"{r['ratio']:.3f} | {r['median_step_ratio']:.3f} | {r['cpu_time_ratio']:.3f} | >= {r['target']} "
                     f"| {r['same_batches']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from bench.bench_rl_rollouts import environment
    from companion.pipeline import tokenizer
    from companion.profiles import profile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: batches of 4, 6 steps")
    ap.add_argument("--only", choices=["sft", "reward"], default=None, help="one of the two trainers")
    args = ap.parse_args(argv if argv is not None else [])
    size = QUICK if args.quick else FULL
    p = profile()
    tok = tokenizer(p)
    works = [w for w in (SFTWorkload, RewardWorkload) if args.only in (None, w.name)]
    results = {w.name: measure(w(tok, p, size), size) for w in works}
    table = markdown(results)
    print(table)
    out = {"setup": {"profile": p.name, **size, "batch": size["batch"] or p.batch_size,
                     "max_length": size["max_length"] or p.context_length, "bf16": p.bf16, "quick": args.quick,
                     "counted": "attention-mask tokens of each batch (reward: chosen + rejected rows)"},
           "results": results, "table": table, **environment()}
    RESULTS.mkdir(exist_ok=True)
    name = "trainer_overhead" + ("_quick" if args.quick else "") + (f"_{args.only}" if args.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=1))
    print("wrote", RESULTS / f"{name}.json")
    return {k: {"ratio": round(r["ratio"], 3), "median_step_ratio": round(r["median_step_ratio"], 3),
                "cpu_time_ratio": round(r["cpu_time_ratio"], 3), "target": TARGET, "same_batches": r["same_batches"],
                "companion_tokens_per_s": round(r["companion_tokens_per_s"]),
                "hand_loop_tokens_per_s": round(r["hand_loop_tokens_per_s"])} for k, r in results.items()}


if __name__ == "__main__":
    main(sys.argv[1:])

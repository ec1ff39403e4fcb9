"""Worker of ``tests/test_multiprocess.py``: tiny SFT, reward-model and PPO runs, one process of several.

Run once per process by a launcher (``accelerate launch --config_file companion/accelerate_configs/cpu_2proc.yaml``
or ``python -m torch.distributed.run --nproc_per_node 2``), or alone as the single-process reference::

    python tests/multiprocess_worker.py OUT_DIR TOKENIZER_DIR [ACCUMULATION]

Every run uses the same *global* batch (``GLOBAL_BATCH``): each of N processes gets 1/N of it, in
ACCUMULATION micro-batches (default 1).  Each process
writes ``OUT_DIR/rank<r>.json`` (losses and metrics) and ``OUT_DIR/<task>_rank<r>.pt`` (the trained parameters
as one flat vector; ``<task>_init.pt`` the starting ones).  Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset

GLOBAL_BATCH = 8
STEPS = 3
WORDS = ["Lily", "Max", "ball", "park", "dog", "happy", "red", "tree", "cat", "ran", "sun", "played"]


def flat(model: torch.nn.Module) -> torch.Tensor:
    """All parameters (tied ones once) as one float64 vector."""
    seen, parts = set(), []
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            parts.append(p.detach().reshape(-1).double().cpu())
    return torch.cat(parts)


def save_init(model: torch.nn.Module, path: Path, rank: int) -> None:
    """The starting parameters (the same in every process: one writes them)."""
    if rank == 0:
        torch.save(flat(model), path)


def small_lm(tok, seed: int = 0):
    from companion.models import build_causal_lm
    from companion.profiles import profile

    return build_causal_lm(tok, profile("tiny"), seed=seed, n_layer=1, n_head=2, n_embd=32,
                           intermediate_size=64, context_length=64)


def sentence(i: int) -> str:
    """A different sentence for each i, of 2 to 7 words (so the batches need padding)."""
    return " ".join(WORDS[(i * 7 + k * 5) % len(WORDS)] for k in range(2 + i % 6)) + "."


def per_device(world: int, accumulation: int) -> dict:
    """A TRL config's batch settings for a 1/world share of the global batch."""
    return {"per_device_train_batch_size": GLOBAL_BATCH // world // accumulation,
            "gradient_accumulation_steps": accumulation}


def sft_run(tok, out: Path, rank: int, world: int, accumulation: int) -> dict:
    from companion import sft

    model = small_lm(tok)
    save_init(model, out / "sft_init.pt", rank)
    data = Dataset.from_list([{"messages": [{"role": "user", "content": sentence(i)},
                                            {"role": "assistant", "content": sentence(i + 3)}]} for i in range(32)])
    args = sft.sft_config(str(out / "sft"), max_steps=STEPS, **per_device(world, accumulation), learning_rate=5e-3,
                          logging_steps=1, warmup_steps=0, disable_tqdm=True, max_length=64)
    result = sft.train_sft(model, tok, data, args=args)
    torch.save(flat(result.model), out / f"sft_rank{rank}.pt")
    return {"loss": result.history["train_loss"]}


def reward_run(tok, out: Path, rank: int, world: int, accumulation: int) -> dict:
    from companion import reward

    rm = reward.reward_model_from_causal_lm(small_lm(tok), tok)
    save_init(rm, out / "reward_init.pt", rank)
    rows = [{"prompt": [{"role": "user", "content": sentence(i)}],
             "chosen": [{"role": "assistant", "content": sentence(i + 1)}],
             "rejected": [{"role": "assistant", "content": sentence(i + 2)}]} for i in range(32)]
    args = reward.reward_config(str(out / "reward"), max_steps=STEPS, **per_device(world, accumulation),
                                learning_rate=1e-3, logging_steps=1, warmup_steps=0, disable_tqdm=True)
    result = reward.train_reward_model(rm, tok, Dataset.from_list(rows), args=args)
    torch.save(flat(result.model), out / f"reward_rank{rank}.pt")
    return {"loss": result.history["train_loss"]}


def token_fraction(prompts, completions, completion_ids, **kw) -> list[float]:
    """A deterministic reward: the share of response tokens with an even id."""
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def ppo_trainer(tok, world: int, accumulation: int = 1, **overrides):
    from companion import ppo

    cfg = ppo.PPOConfig(**{**dict(batch_size=GLOBAL_BATCH // world, num_mini_batches=1, num_ppo_epochs=2,
                                  gradient_accumulation_steps=accumulation,
                                  learning_rate=1e-3, max_new_tokens=8, temperature=1.0, use_cpu=True), **overrides})
    rows = [{"prompt": [{"role": "user", "content": sentence(i)}]} for i in range(16)]
    # a stop id outside the vocabulary: every response is max_new_tokens long, so every process's
    # micro-batch holds the same number of tokens and the mean of their token means is the global one
    return ppo.PPOTrainer(cfg, small_lm(tok), tok, rows, reward_funcs=token_fraction, stop_ids=[len(tok) + 7])


def ppo_update_run(tok, out: Path, rank: int, world: int, accumulation: int) -> dict:
    """One PPO update on the same global rollout: every process samples all of it, then trains on its share."""
    tr = ppo_trainer(tok, world, accumulation)
    save_init(tr.model, out / "ppo_update_init.pt", rank)
    tr._generator.manual_seed(1234)  # the same samples in every process (the default seed differs per rank)
    batch = tr.rollout(tr.rows[:GLOBAL_BATCH])
    share = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    for name in ("queries", "responses", "mask", "logprobs", "ref_logprobs", "values", "scores", "raw_scores",
                 "contains_eos"):
        setattr(batch, name, getattr(batch, name)[share])
    metrics = tr.update(batch)
    torch.save(flat(tr.model), out / f"ppo_update_rank{rank}.pt")
    return {"loss": [metrics["loss/policy_avg"], metrics["loss/value_avg"]], "metrics": metrics}


def ppo_train_run(tok, out: Path, rank: int, world: int, accumulation: int) -> dict:
    """The training loop itself: rollouts differ per process; the parameters must stay the same."""
    tr = ppo_trainer(tok, world, accumulation, normalize_scores=True, kl_target=0.5, kl_horizon=100, num_mini_batches=2)
    history = tr.train(steps=2, progress=False)
    torch.save(flat(tr.model), out / f"ppo_train_rank{rank}.pt")
    keys = ("objective/scores", "objective/kl", "objective/kl_coef", "loss/policy_avg", "val/num_eos_tokens")
    return {"history": {k: history[k] for k in keys}, "score_scale": tr.score_scale}


def rloo_run(tok, out: Path, rank: int, world: int, accumulation: int) -> dict:
    """One RLOO step with a KL penalty (so TRL loads a reference model from a temporary copy)."""
    from companion import critic_free

    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": sentence(i)}]} for i in range(8)])
    args = critic_free.rloo_config(str(out / "rloo"), max_steps=1, **per_device(world, accumulation), num_generations=4,
                                   max_completion_length=8, disable_tqdm=True)
    result = critic_free.train_rloo(small_lm(tok), tok, prompts, [token_fraction], args)
    torch.save(flat(result.model), out / f"rloo_rank{rank}.pt")
    return {"kl": result.history["kl"]}


TASKS = {"sft": sft_run, "reward": reward_run, "ppo_update": ppo_update_run, "ppo_train": ppo_train_run,
         "rloo": rloo_run}


def main(out: str, tokenizer_dir: str, accumulation: str = "1") -> None:
    from transformers import AutoTokenizer

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"rank": rank, "world": world, "tasks": {}}
    for name, run in TASKS.items():
        report["tasks"][name] = run(tok, out_dir, rank, world, int(accumulation))
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:4])

"""Tokens/s of the companion pretraining path versus a minimal hand-written PyTorch loop.

Same model (the tiny profile's base architecture), same batch and context, same optimizer
(AdamW, weight decay, gradient clipping at 1.0, warmup + cosine schedule), same packed data.
After a discarded warm-up, the two alternate (hand, companion, hand, companion) and the
medians are compared, so that a change in machine load does not favour either side.  Target: ratio >= 0.9.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
from transformers import get_cosine_schedule_with_warmup

from companion.data import load_dataset
from companion.models import build_causal_lm
from companion.pipeline import tokenizer
from companion.pretrain import PretrainConfig, collate_blocks, pack_texts, pretrain
from companion.profiles import profile

STEPS = 20
SKIP = 3  # warm-up steps left out of the timing, on both sides
ROUNDS = 2


def hand_loop(model, blocks, cfg: PretrainConfig) -> float:
    """Steady-state tokens/s of the plainest correct training loop."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.learning_rate,
                            fused=True)  # as the Trainer (adamw_torch_fused)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.max_steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    times = []
    last = time.perf_counter()
    for _ in range(cfg.max_steps):
        idx = torch.randint(len(blocks), (cfg.batch_size,), generator=gen).tolist()
        batch = collate_blocks([blocks[i] for i in idx])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return cfg.batch_size * cfg.context_length * len(times[SKIP:]) / sum(times[SKIP:])


def main() -> dict:
    p = profile()
    tok = tokenizer(p)
    texts = list(load_dataset("tinystories", split="train", limit=600)["text"])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PretrainConfig(max_steps=STEPS, batch_size=p.batch_size, context_length=p.context_length,
                             learning_rate=p.learning_rate, warmup_steps=5, logging_steps=5,
                             output_dir=tmp, disable_tqdm=True)
        blocks = pack_texts(tok, texts, cfg.context_length).to_list()
        warm = PretrainConfig(**{**vars(cfg), "max_steps": SKIP + 2})
        hand_loop(build_causal_lm(tok, p), blocks, warm)  # warm up allocator and kernels, discarded
        hand, comp = [], []
        for _ in range(ROUNDS):  # alternate, so that changing machine load hits both sides
            hand.append(hand_loop(build_causal_lm(tok, p), blocks, cfg))
            comp.append(pretrain(build_causal_lm(tok, p), tok, texts, None, cfg)["tokens_per_s"])
    hand_tps, comp_tps = statistics.median(hand), statistics.median(comp)
    result = {"companion_tokens_per_s": round(comp_tps), "hand_loop_tokens_per_s": round(hand_tps),
              "companion_runs": [round(c) for c in comp], "hand_loop_runs": [round(h) for h in hand],
              "ratio": round(comp_tps / hand_tps, 3), "target": 0.9,
              "batch": f"{cfg.batch_size}x{cfg.context_length}", "steps": STEPS, "timed_steps": STEPS - SKIP,
              "threads": torch.get_num_threads()}
    print("pretrain throughput:", result)
    return result


if __name__ == "__main__":
    main()

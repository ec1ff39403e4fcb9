"""Character-level Tiny Shakespeare on a 5-minute training budget, against nanoGPT's 1.88.

nanoGPT's CPU recipe (``config/train_shakespeare_char.py`` with ``--device=cpu
--compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0``)
reports a validation loss of about 1.88.  We train our LLaMA-style model on the same split
(first 90 % / last 10 % of ``tinyshakespeare.txt``) for ``BUDGET_S`` seconds of training and
report the loss on the *whole* validation split.  Set ``COMPANION_BENCH_BUDGET_S`` to change
the budget.
"""

from __future__ import annotations

import os

from companion.charlm import CharLMConfig, sample_chars, train_char_lm
from companion.data import data_dir
from companion.seeding import seed_everything

NANOGPT_VAL_LOSS = 1.88
BUDGET_S = float(os.environ.get("COMPANION_BENCH_BUDGET_S", 300))


def main() -> dict:
    root = data_dir()
    if root is None:
        return {"skipped": "sample data not found: set COMPANION_DATA_DIR to the shared/data folder"}
    text = (root / "pretrain" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    seed_everything(0)
    cfg = CharLMConfig(time_budget_s=BUDGET_S)
    out = train_char_lm(text, cfg)
    result = {"val_loss": round(out["final_val_loss"], 4), "nanogpt_val_loss": NANOGPT_VAL_LOSS,
              "beats_nanogpt": out["final_val_loss"] < NANOGPT_VAL_LOSS, "budget_s": BUDGET_S,
              "steps": out["steps"], "tokens_per_s": round(out["tokens_per_s"]), "params": out["params"], "threads": out["threads"],
              "curve": list(zip(out["history"]["seconds"], out["history"]["val_loss"])),
              "config": {k: v for k, v in vars(cfg).items()},
              "sample": sample_chars(out["model"], out["tokenizer"], "ROMEO:\n", n=200)}
    print("shakespeare char:", {k: v for k, v in result.items() if k != "sample"})
    print(result["sample"])
    return result


if __name__ == "__main__":
    main()

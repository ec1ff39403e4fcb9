"""Pretraining: next-token prediction on raw text, in TRL's pattern (config + trainer)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments


@dataclass
class PretrainConfig:
    """Settings of one pretraining run (defaults: the tiny profile's base model)."""

    max_steps: int = 150
    batch_size: int = 16
    context_length: int = 256
    learning_rate: float = 3e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    lr_scheduler_type: str = "cosine"
    eval_steps: int = 50
    logging_steps: int = 10
    seed: int = 0
    output_dir: str = "runs/pretrain"
    save_steps: int | None = None  # checkpoint every N steps (None: no checkpoints)
    report_to: str = "none"


def pack_texts(tokenizer, texts: list[str], block_size: int) -> Dataset:
    """Tokenize, join with EOS, and cut into equal blocks of ``block_size`` tokens."""
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    ids: list[int] = []
    for t in texts:
        ids.extend(tokenizer(t, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n_blocks = len(ids) // block_size
    if n_blocks == 0:
        raise ValueError(
            f"Corpus too small: {len(ids)} tokens cannot fill one block of {block_size}. "
            "Add more text or lower context_length."
        )
    blocks = [ids[i * block_size:(i + 1) * block_size] for i in range(n_blocks)]
    return Dataset.from_dict({"input_ids": blocks})


def make_trainer(model, tokenizer, train: Dataset, eval_: Dataset | None, cfg: PretrainConfig) -> Trainer:
    """A transformers Trainer set up for causal-LM pretraining on packed blocks."""
    args = TrainingArguments(
        output_dir=cfg.output_dir,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if eval_ is not None else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return Trainer(model=model, args=args, train_dataset=train, eval_dataset=eval_,
                   data_collator=collator, processing_class=tokenizer)


def pretrain(model, tokenizer, train_texts: list[str], eval_texts: list[str] | None = None,
             cfg: PretrainConfig | None = None) -> dict:
    """Train ``model`` in place; return the loss history and final held-out loss."""
    cfg = cfg or PretrainConfig()
    train = pack_texts(tokenizer, train_texts, cfg.context_length)
    eval_ = pack_texts(tokenizer, eval_texts, cfg.context_length) if eval_texts else None
    trainer = make_trainer(model, tokenizer, train, eval_, cfg)
    trainer.train()
    logs = trainer.state.log_history
    history = {
        "train_steps": [r["step"] for r in logs if "loss" in r],
        "train_loss": [r["loss"] for r in logs if "loss" in r],
        "eval_steps": [r["step"] for r in logs if "eval_loss" in r],
        "eval_loss": [r["eval_loss"] for r in logs if "eval_loss" in r],
    }
    if eval_ is not None:
        final = trainer.evaluate()["eval_loss"]
        history["final_eval_loss"] = final
        history["final_eval_ppl"] = math.exp(final)
    return history

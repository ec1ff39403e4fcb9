"""Pretraining: next-token prediction on raw text, in TRL's pattern (config + trainer).

``pretrain(model, tokenizer, train_texts, eval_texts, cfg)`` packs the texts into blocks
of ``cfg.context_length`` tokens and trains with the transformers ``Trainer``: AdamW, a
warmup + cosine learning-rate schedule, periodic held-out evaluation, checkpoints every
``cfg.save_steps`` steps, and resumption from a checkpoint.  It returns the loss history
and the measured training speed in tokens per second.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from companion.training import trained_model


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
    max_grad_norm: float = 1.0
    eval_steps: int = 50
    max_eval_blocks: int | None = None  # evaluate on at most this many held-out blocks
    logging_steps: int = 10
    seed: int = 0
    output_dir: str = "runs/pretrain"
    save_steps: int | None = None  # checkpoint every N steps (None: no checkpoints)
    save_total_limit: int | None = 2
    resume_from_checkpoint: str | bool | None = None  # a checkpoint dir, or True for the latest
    stop_after_step: int | None = None  # simulate an interruption: stop (and save) at this step
    bf16: bool = False
    disable_tqdm: bool = False
    report_to: str = "none"


def pack_texts(tokenizer, texts: list[str], block_size: int) -> Dataset:
    """Tokenize, join with EOS, and cut into equal blocks of ``block_size`` tokens.

    The last partial block is dropped, so every block is a full training example.
    """
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2, got {block_size}")
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("Corpus is empty: pass at least one non-empty text to pretrain on.")
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


def collate_blocks(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack equal-length blocks; the labels are the inputs (the model shifts them)."""
    ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.long)
    return {"input_ids": ids, "labels": ids.clone()}


class ThroughputCallback(TrainerCallback):
    """Wall-clock time of every optimizer step, for tokens/s (evaluation time excluded)."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.step_seconds: list[float] = []
        self._last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.step_seconds.append(now - self._last)
        self._last = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._last = None  # the next interval would include evaluation: skip it

    def on_save(self, args, state, control, **kwargs):
        self._last = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._last is None:
            self._last = time.perf_counter()

    def tokens_per_second(self, skip: int = 2) -> float:
        """Steady-state speed: the first ``skip`` steps (warm-up) are left out."""
        times = self.step_seconds[skip:] or self.step_seconds
        return self.tokens_per_step * len(times) / sum(times) if times else float("nan")


class StopAfterStep(TrainerCallback):
    """Stop training (and save a checkpoint) once ``step`` optimizer steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_save = True
            control.should_training_stop = True
        return control


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
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if eval_ is not None else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=cfg.bf16,
        report_to=cfg.report_to,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=cfg.disable_tqdm,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=eval_,
                      data_collator=collate_blocks, processing_class=tokenizer)
    if cfg.disable_tqdm:
        trainer.remove_callback(PrinterCallback)  # quiet: no log dicts printed either
    trainer.add_callback(ThroughputCallback(cfg.batch_size * cfg.context_length))
    if cfg.stop_after_step:
        trainer.add_callback(StopAfterStep(cfg.stop_after_step))
    return trainer


def throughput(trainer: Trainer) -> ThroughputCallback:
    """The trainer's :class:`ThroughputCallback`."""
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, ThroughputCallback))


def history_of(trainer: Trainer) -> dict:
    """Train/held-out loss curves and the learning rate, from the trainer's log history."""
    logs = trainer.state.log_history
    return {
        "train_steps": [r["step"] for r in logs if "loss" in r],
        "train_loss": [r["loss"] for r in logs if "loss" in r],
        "learning_rate": [r["learning_rate"] for r in logs if "loss" in r],
        "eval_steps": [r["step"] for r in logs if "eval_loss" in r],
        "eval_loss": [r["eval_loss"] for r in logs if "eval_loss" in r],
    }


def pretrain(model, tokenizer, train_texts: list[str], eval_texts: list[str] | None = None,
             cfg: PretrainConfig | None = None) -> dict:
    """Train ``model`` in place; return the loss history, final held-out loss and tokens/s."""
    cfg = cfg or PretrainConfig()
    train = pack_texts(tokenizer, train_texts, cfg.context_length)
    if len(train) < cfg.batch_size:
        raise ValueError(
            f"Corpus too small: {len(train)} blocks of {cfg.context_length} tokens, fewer than one "
            f"batch of {cfg.batch_size}. Add more text, or lower batch_size or context_length."
        )
    eval_ = pack_texts(tokenizer, eval_texts, cfg.context_length) if eval_texts else None
    if eval_ is not None and cfg.max_eval_blocks and len(eval_) > cfg.max_eval_blocks:
        eval_ = eval_.select(range(cfg.max_eval_blocks))
    trainer = make_trainer(model, tokenizer, train, eval_, cfg)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=cfg.resume_from_checkpoint)
    seconds = time.perf_counter() - start
    history = history_of(trainer)
    speed = throughput(trainer)
    history.update(
        train_seconds=seconds,
        tokens_per_s=speed.tokens_per_second(),
        train_tokens=len(train) * cfg.context_length,
        tokens_seen=trainer.state.global_step * cfg.batch_size * cfg.context_length,
        steps=trainer.state.global_step,
    )
    if eval_ is not None:
        final = trainer.evaluate()["eval_loss"]
        history["final_eval_loss"] = final
        history["final_eval_ppl"] = math.exp(final)
    trained_model(trainer)  # ``model`` is trained in place; drop the mixed-precision wrapper
    return history

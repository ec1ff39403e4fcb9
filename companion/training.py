"""Settings every trainer of the book shares (TRL configs are TrainingArguments subclasses)."""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass, field

import torch

from companion.profiles import Profile


def runtime_args(p: Profile) -> dict:
    """Device, precision, seeds and bookkeeping shared by the SFT, reward and other configs.

    No checkpoints and no external loggers (the caller saves the trained model); gradient
    checkpointing only on a GPU; bf16 where the profile says the hardware has it;
    fixed seeds for reproducible runs.
    """
    gpu = p.device == "cuda"
    return dict(
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        gradient_checkpointing=gpu,
        bf16=p.bf16,
        use_cpu=not gpu,
        seed=p.seed,
        data_seed=p.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


@dataclass
class TrainResult:
    """What the book's TRL-based trainers return (GRPO/RLOO, DPO/KTO).

    ``history`` maps each metric TRL logged (``loss``, ``reward``, ``rewards/margins``, ...) to
    its per-step values (None where a step did not log it).  ``peak_memory_mb`` is the GPU's
    peak allocation, or on CPU the process's peak resident memory so far.
    """

    model: torch.nn.Module
    history: dict[str, list] = field(default_factory=dict)
    train_seconds: float = 0.0
    peak_memory_mb: float | None = None


def is_peft(model) -> bool:
    """True for a PEFT (LoRA) model."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def trained_model(trainer):
    """The trainer's model without the wrappers training added.

    Under mixed precision (``bf16=True``), accelerate patches the model's ``forward`` to
    run under autocast.  We remove that patch, so the returned model computes in its own
    dtype (float32 here) like any freshly loaded model: evaluation and generation give
    the same numbers as after ``save_pretrained`` + ``from_pretrained``.
    """
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)


def history_of(log_history: list[dict]) -> dict[str, list]:
    """TRL's ``state.log_history`` as metric -> per-step values (training rows only, None where absent)."""
    rows = [r for r in log_history if "train_runtime" not in r and "eval_loss" not in r]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: [r.get(k) for r in rows] for k in keys}


def peak_memory_mb(cuda: bool) -> float:
    """The GPU's peak allocation, or this process's peak resident memory (Linux: KiB; macOS: bytes)."""
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def plain_model(trainer):
    """The trained model, unwrapped, with TRL's fused-LM-head ``forward`` patch removed."""
    model = trained_model(trainer)
    base = model.get_base_model() if is_peft(model) else model
    base.__dict__.pop("forward", None)  # TRL's add_fused_lm_head set an instance attribute
    return model


def save_local_copy(model, path) -> None:
    """``model.save_pretrained(path)`` in this process, whatever its rank (a private temporary copy).

    Once torch.distributed is initialized (a TRL config does it under ``accelerate launch`` or
    torchrun), transformers 5 writes on rank 0 only, as if every process shared the folder; the
    other processes would then read an empty folder.  Alone in one process this is ``save_pretrained``.
    """
    model.__dict__["should_save_on_this_rank"] = lambda is_main_process: is_main_process
    try:
        model.save_pretrained(path)
    finally:
        model.__dict__.pop("should_save_on_this_rank", None)


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def resume_checkpoint(output_dir: str | None, resume: str | bool | None) -> str | None:
    """The checkpoint a TRL/transformers run resumes from.

    ``resume``: None/False (start fresh), True (the latest ``checkpoint-*`` in ``output_dir``, or a
    fresh start when there is none yet: the same call works for the first run and the rerun after a
    kill), or a checkpoint folder.  Checkpoints are written with ``save_strategy="steps"`` and
    ``save_steps`` in the config.
    """
    from pathlib import Path

    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        return None
    if resume is True:
        return get_last_checkpoint(output_dir) if output_dir and Path(output_dir).is_dir() else None
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r} is not a folder; pass a checkpoint-<step> "
                                "folder of an earlier run, or True for the latest one in its output_dir")
    return str(resume)


def train_with_oom_retry(make_trainer, args, min_batch: int = 1, retry: bool = True,
                         resume_from_checkpoint: str | bool | None = None):
    """Build a trainer with ``make_trainer(args)`` and train it; on a GPU out-of-memory before the
    first optimizer step, halve the micro-batch, double the gradient accumulation (the same
    effective batch) and try again, saying so.  Returns ``(trainer, args)`` of the run that finished.
    ``resume_from_checkpoint`` is read by :func:`resume_checkpoint`.

    An out-of-memory after training has started (the weights have moved; a restart would not be
    the same run), or with ``retry=False`` (e.g. LoRA, whose adapters the first trainer already
    injected), is raised with the settings to use next time.
    """
    import dataclasses
    import gc

    while True:
        trainer = make_trainer(args)
        try:
            resume = resume_checkpoint(getattr(args, "output_dir", None), resume_from_checkpoint)
            trainer.train(**({"resume_from_checkpoint": resume} if resume else {}))
            return trainer, args
        except BaseException as e:
            if not _is_oom(e):
                raise
            batch, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
            started = trainer.state.global_step > 0
            del trainer
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if started or not retry or batch // 2 < min_batch:
                raise RuntimeError(
                    f"out of GPU memory with per_device_train_batch_size={batch}, gradient_accumulation_steps={accum}"
                    + (" after training had started" if started else "")
                    + f": use per_device_train_batch_size={max(batch // 2, 1)} and gradient_accumulation_steps="
                    f"{accum * 2}, a shorter max_length, or LoRA (companion.sft.lora_config)"
                ) from e
            args = dataclasses.replace(args, per_device_train_batch_size=batch // 2, gradient_accumulation_steps=accum * 2)
            print(f"out of GPU memory at per_device_train_batch_size={batch}: retrying with {batch // 2} x "
                  f"{accum * 2} accumulation steps (the same effective batch)", file=sys.stderr)

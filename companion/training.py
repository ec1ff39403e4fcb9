"""Settings every trainer of the book shares (TRL configs are TrainingArguments subclasses)."""

from __future__ import annotations

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
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def trained_model(trainer):
    """The trainer's model without the wrappers training added.

    Under mixed precision (``bf16=True``), accelerate patches the model's ``forward`` to
    run under autocast.  We remove that patch, so the returned model computes in its own
    dtype (float32 here) like any freshly loaded model: evaluation and generation give
    the same numbers as after ``save_pretrained`` + ``from_pretrained``.
    """
    return trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)

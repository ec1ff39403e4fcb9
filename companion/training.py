"""Settings every trainer of the book shares (TRL configs are TrainingArguments subclasses)."""

from __future__ import annotations

from companion.profiles import Profile


def runtime_args(p: Profile) -> dict:
    """Device, precision, seeds and bookkeeping shared by the SFT, reward and other configs.

    No checkpoints and no external loggers (the caller saves the trained model); gradient
    checkpointing and bf16 only on a GPU; fixed seeds for reproducible runs.
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

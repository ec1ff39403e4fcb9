"""Profiles: one switch that sizes every experiment in the book.

``tiny``  - CPU, offline, minutes: small models trained from scratch, local sample data.
``gpu``   - a CUDA GPU (Colab T4 and up): real pretrained checkpoints, full Hub datasets.

The active profile is ``gpu`` when CUDA is available and ``tiny`` otherwise; the
environment variable ``COMPANION_PROFILE`` overrides the choice.  Model ids can be
pointed at local directories with ``COMPANION_BASE_MODEL`` / ``COMPANION_CHAT_MODEL`` /
``COMPANION_REWARD_MODEL``
(the tests use this to exercise the gpu code path offline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

PROFILE_ENV = "COMPANION_PROFILE"
PROFILE_NAMES = ("tiny", "gpu")


@dataclass(frozen=True)
class Profile:
    """Sizes and sources shared by every chapter."""

    name: str
    device: str
    # Models: ``None`` means "build a small model from a config and train it here".
    base_model: str | None
    chat_model: str | None
    # A Hub reward model for RL (``None``: the reward model trained in chapter 5).
    reward_model: str | None = None
    # Architecture of the from-scratch model (used when ``base_model`` is None).
    model_config: dict = field(default_factory=dict)
    vocab_size: int = 4096
    context_length: int = 256
    # Data: at most this many rows of any dataset (``None`` = all of it).
    max_rows: int | None = 2000
    # Training sizes.
    batch_size: int = 16
    pretrain_steps: int = 600
    learning_rate: float = 3e-3
    bf16: bool = False
    # The seed of every stage's training (0: the book's runs).
    seed: int = 0
    # Per-stage overrides of the book's sizes, e.g. {"base": {"max_steps": 600}, "ppo": {"steps": 8}}
    # (``companion pipeline --size base.max_steps=600``); see ``companion.pipeline.stage_sizes``.
    sizes: dict = field(default_factory=dict)

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"


TINY = Profile(
    name="tiny",
    device="cpu",
    base_model=None,
    chat_model=None,
    model_config=dict(n_layer=4, n_head=4, n_embd=192, intermediate_size=512),
    vocab_size=4096,
    context_length=256,
    max_rows=4000,
    batch_size=16,
    pretrain_steps=1200,  # ~16 min on 2 CPU cores (0.78 s/step, measured): see companion.pipeline.base_config
    learning_rate=5e-3,
)

GPU = Profile(
    name="gpu",
    device="cuda",
    base_model="HuggingFaceTB/SmolLM2-135M",
    chat_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    model_config=dict(n_layer=12, n_head=12, n_embd=768, intermediate_size=2048),
    vocab_size=49152,
    context_length=512,
    max_rows=50_000,
    batch_size=16,
    pretrain_steps=1000,
    learning_rate=5e-5,
)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with bfloat16 matrix instructions (Intel AMX or AVX512-BF16).

    There, bf16 autocast makes the tiny model's training about 1.5x faster (measured on a
    2-core Xeon with AMX); elsewhere bf16 on a CPU is emulated and slower.
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:  # not Linux
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def tiny_bf16() -> bool:
    """Whether the tiny profile trains with bf16 autocast: where :func:`cpu_has_fast_bf16` is True.

    ``COMPANION_BF16=0`` (float32) or ``=1`` (bf16) overrides the detection.  bf16 rounds
    differently, so a run on such a CPU takes another trajectory than a float32 run (and float32
    runs differ a little between processors too).  The chapters print the numbers they measured;
    their asserts were set on float32 runs (CI's processors have no fast bf16).
    """
    forced = os.environ.get("COMPANION_BF16")
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"COMPANION_BF16 must be 0 or 1 (or unset to detect), got {forced!r}")
        return forced == "1"
    return cpu_has_fast_bf16()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard requirement
        return False


def profile(name: str | None = None) -> Profile:
    """Return the active profile.

    Order: the ``name`` argument, then ``$COMPANION_PROFILE``, then ``gpu`` if a CUDA
    device is visible, else ``tiny``.
    """
    chosen = name or os.environ.get(PROFILE_ENV) or ("gpu" if _cuda_available() else "tiny")
    chosen = chosen.strip().lower()
    if chosen not in PROFILE_NAMES:
        raise ValueError(
            f"Unknown profile {chosen!r}. Use one of {PROFILE_NAMES}, e.g. "
            f"`export {PROFILE_ENV}=tiny`."
        )
    p = TINY if chosen == "tiny" else GPU
    if p.name == "tiny":
        p = replace(p, bf16=tiny_bf16())
    elif p.name == "gpu" and not _cuda_available():
        # The gpu profile's code path still runs on CPU (tests, offline checks).
        p = replace(p, device="cpu", bf16=False)
    elif p.name == "gpu":
        import torch

        p = replace(p, bf16=torch.cuda.is_bf16_supported())
    overrides = {
        "base_model": os.environ.get("COMPANION_BASE_MODEL"),
        "chat_model": os.environ.get("COMPANION_CHAT_MODEL"),
        "reward_model": os.environ.get("COMPANION_REWARD_MODEL"),
    }
    overrides = {k: v for k, v in overrides.items() if v}
    return replace(p, **overrides) if overrides else p


def describe(p: Profile | None = None) -> str:
    """One-line human summary of a profile (printed at the top of every chapter)."""
    p = p or profile()
    model = p.base_model or (
        "small model trained here ({n_layer} layers, d={n_embd})".format(**p.model_config)
    )
    return f"profile={p.name} device={p.device} base model={model} max rows={p.max_rows}"


def hardware() -> str:
    """The accelerator a chapter runs on, in words: the GPU's name and memory, or the CPU's threads."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"GPU: {props.name}, {props.total_memory / 2**30:.1f} GiB"
    return f"no CUDA GPU: CPU with {torch.get_num_threads()} threads"

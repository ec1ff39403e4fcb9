"""Reproducibility: one call seeds every random number generator the book uses."""

from __future__ import annotations

import os
import random


def seed_everything(seed: int = 0, deterministic: bool = True) -> int:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return the seed.

    With ``deterministic=True`` PyTorch is asked for deterministic kernels, so the same
    seed gives the same numbers on CPU run after run.
    """
    import numpy as np
    import torch  # imported here, so `import companion` stays light (the CLI, the cache tools)

    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed

"""Where a run computes: the one rule for ``runtime.device``, shared by the runner and the tasks."""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a CUDA device is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("runtime.device: cuda requested but no CUDA device is available")
    return name

"""The task interface: what the protocol needs from a problem.

A task owns the trainable parameters' initial values (float32 master weights), the clients'
data, the loss, and evaluation. Every batch is a deterministic function of (client, round,
step): no RNG state is carried, so a resumed run sees the same batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from ..zo import Params, Perturbation, PerturbBuffer

Batch = Any


class Task:
    name: str = "task"
    #: the metric that summary.json's final/best refer to, and whether lower is better
    metric: str = "loss"
    metric_mode: Literal["min", "max"] = "min"
    #: a finite loss above this (relative to the initial one) marks a run as diverged
    divergence_factor: float = 1e6

    def __init__(self, cfg, num_clients: int, seed: int, runtime=None):
        self.cfg = cfg
        self.num_clients = num_clients
        self.seed = seed
        self.runtime = runtime
        self._buffer = PerturbBuffer()

    # -- parameters --------------------------------------------------------------------------
    def init_params(self) -> Params:
        """Fresh float32 master weights x_0, identical on every call."""
        raise NotImplementedError

    def num_params(self) -> int:
        return sum(p.numel() for p in self.init_params())

    # -- data --------------------------------------------------------------------------------
    def client_weight(self, client: int) -> float:
        """Relative data size of a client (for size-weighted aggregation)."""
        return 1.0

    def batch(self, client: int, round: int, step: int) -> Batch:
        raise NotImplementedError

    # -- loss --------------------------------------------------------------------------------
    def loss(self, params: Params, batch: Batch, pert: Perturbation | None = None) -> float:
        """Loss at x (pert None) or at x + pert. Default: exact in-place perturb and restore."""
        if pert is None:
            with torch.no_grad():
                return float(self.batch_loss(params, batch))
        with torch.no_grad(), self._buffer.perturbed(params, pert):
            return float(self.batch_loss(params, batch))

    def batch_loss(self, params: Params, batch: Batch) -> torch.Tensor:
        """Loss tensor at the current params (used with autograd by first-order baselines)."""
        raise NotImplementedError

    def loss_and_grad(self, params: Params, batch: Batch) -> tuple[float, Params]:
        """Loss and gradient at params. A tensor the batch never reaches (a vocabulary chunk
        holding none of its tokens, in an untied embedding) has gradient zero."""
        leaves = [p.detach().requires_grad_(True) for p in params]
        value = self.batch_loss(leaves, batch)
        grads = torch.autograd.grad(value, leaves, allow_unused=True)
        return float(value.detach()), [torch.zeros_like(p) if g is None else g.detach()
                                       for p, g in zip(leaves, grads)]

    # -- evaluation --------------------------------------------------------------------------
    def evaluate(self, params: Params, H: Params | None = None, split: str = "eval") -> dict[str, float]:
        """Metrics at x; must include ``self.metric``. ``H`` is the optimiser's preconditioner
        (HiSo's learned diagonal), for tasks that can report on it."""
        raise NotImplementedError

    def oracle_h(self) -> Params | None:
        """The Hessian diagonal when the task knows it (quadratics); else None."""
        return None

    def segments(self) -> list[list[int]] | None:
        """Sizes of the model's own tensors inside each parameter tensor (flat order), for a task
        that packs several into one vector (the digits CNN); None: each parameter is one."""
        return None

    @classmethod
    def for_parameters(cls, cfg, num_clients: int, seed: int, runtime=None) -> "Task":
        """An instance good for ``init_params``, ``base_info`` and ``save_model`` (export); a
        task whose data is costly to load may skip it here."""
        return cls(cfg, num_clients, seed, runtime)

    def base_info(self) -> dict:
        """What identifies the base model beyond the config (e.g. a tokenizer hash)."""
        return {}

    def save_model(self, params: Params, out_dir: Path) -> list[str]:
        """Write ``params`` into the existing directory ``out_dir``; returns the file names.
        Default: ``model.safetensors``, tensors keyed 00000, 00001 ... in master order."""
        from .. import io

        io.atomic_write_tensors(Path(out_dir) / "model.safetensors", params,
                                metadata={"task": self.name})
        return ["model.safetensors"]

    def write_artifacts(self, out_dir: Path) -> None:
        """Optional per-run files (e.g. a client label summary)."""

"""What the classification tasks share: a small model held as one flat float32 vector, a
cross-entropy loss, seeded per-client batches, and eval/dev accuracy.

A subclass sets ``self.arch`` (a :class:`hiso.vision.Arch`), ``self._x0`` (its flat initial
weights), ``self.dev`` and ``self.eval`` ((x, y) tensors), and supplies ``client_data`` and
``describe`` (written as ``data.json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import io
from ..vision import plain_cpu_kernels
from ..zo import Params, Perturbation
from .base import Task


class FlatClassifierTask(Task):
    metric = "accuracy"
    metric_mode = "max"

    # -- parameters --------------------------------------------------------------------------
    def init_params(self) -> Params:
        return [self._x0.clone()]

    def num_params(self) -> int:
        return self.arch.num_params()

    def segments(self) -> list[list[int]]:
        return [[math.prod(s) for s in self.arch.shapes()]]

    # -- data --------------------------------------------------------------------------------
    def client_data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A client's training examples (x, y)."""
        raise NotImplementedError

    def batch(self, client: int, round: int, step: int):
        """``batch_size`` distinct examples of the client's data drawn by
        ``numpy.random.default_rng([seed, client, round, step])``, or all of it when smaller."""
        x, y = self.client_data(client)
        n, b = len(y), self.cfg.batch_size
        if n <= b:
            return x, y
        rng = np.random.default_rng([self.seed, client, round, step])
        idx = torch.from_numpy(np.sort(rng.choice(n, size=b, replace=False)))
        return x[idx], y[idx]

    # -- loss --------------------------------------------------------------------------------
    def loss(self, params: Params, batch, pert: Perturbation | None = None) -> float:
        # The master weights are never touched: the perturbed weights are built per tensor.
        with torch.no_grad():
            if pert is not None:
                params = [pert.delta(0, params[0]).add_(params[0])]
            return float(self.batch_loss(params, batch))

    def batch_loss(self, params: Params, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.arch.forward(params[0], x), y)

    def loss_and_grad(self, params: Params, batch) -> tuple[float, Params]:
        with plain_cpu_kernels():  # the backward pass on the same kernels as the forward
            return super().loss_and_grad(params, batch)

    # -- evaluation --------------------------------------------------------------------------
    def _scores(self, params: Params, data) -> tuple[float, float]:
        x, y = data
        with torch.no_grad():
            logits = self.arch.forward(params[0], x)
            loss = float(F.cross_entropy(logits, y))
            acc = float((logits.argmax(dim=1) == y).float().mean())
        return acc, loss

    def evaluate(self, params: Params, H: Params | None = None, split: str = "eval") -> dict[str, float]:
        """``accuracy``/``loss`` on the eval split (the reported metric) and ``dev_accuracy``/
        ``dev_loss`` on the dev split (for selection), in every record; with ``split="dev"``
        the dev numbers alone. HiSo's H is summarised by its quantiles."""
        dev_acc, dev_loss = self._scores(params, self.dev)
        out = {"dev_accuracy": dev_acc, "dev_loss": dev_loss}
        if split == "dev":
            return out
        acc, loss = self._scores(params, self.eval)
        out = {"accuracy": acc, "loss": loss, **out}
        if H is not None:
            h = torch.cat([t.reshape(-1) for t in H]).double()
            q = torch.quantile(h, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
            out.update(h_min=float(q[0]), h_median=float(q[1]), h_max=float(q[2]))
        return out

    # -- artefacts ---------------------------------------------------------------------------
    def describe(self) -> dict:
        """The run's data summary (``data.json``)."""
        raise NotImplementedError

    def write_artifacts(self, out_dir: Path) -> None:
        """``data.json``: :meth:`describe`."""
        io.atomic_write_text(Path(out_dir) / "data.json", json.dumps(self.describe(), indent=1) + "\n")

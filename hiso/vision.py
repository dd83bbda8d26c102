"""Tiny image classifiers written as pure functions of a parameter list.

The ZO engine owns the parameters (a list of float32 tensors); a model here is only a recipe:
the shapes of its tensors, how to initialise them from a seed, and ``forward(params, x)``.
Nothing is stored in an ``nn.Module``, so evaluating at x + mu z is just calling ``forward`` with
other tensors, and autograd (for the first-order baselines) works on the same code. ``forward``
also takes one flat vector (the tasks use that: one seeded Gaussian draw per perturbation instead
of one per tensor, a sizeable share of a ZO step's cost for a model this small).

* ``cnn``: conv3x3(c1) - ReLU - maxpool2 - conv3x3(c2) - ReLU - maxpool2 - linear(classes).
  With 8x8 inputs and (c1, c2) = (8, 16) it has 1,898 parameters; with 28x28 MNIST 9,098.
* ``mlp``: flatten - linear(hidden) - ReLU - linear(classes). With ``features`` > 0 its input
  is a feature vector of that width instead of an image (the synthetic classification task).

Convolutions run with oneDNN switched off (:func:`plain_cpu_kernels`): on these tiny inputs
PyTorch's native kernels are about twice as fast, and one fixed backend keeps the arithmetic the
same whichever way a forward is reached (ZO loss, evaluation, autograd).

Initialisation follows PyTorch's defaults for Conv2d/Linear (Kaiming-uniform with a = sqrt(5),
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), drawn from a dedicated
generator, so ``init`` is a pure function of its seed.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Params = list[torch.Tensor]


@contextlib.contextmanager
def plain_cpu_kernels():
    """Switch oneDNN (mkldnn) off inside the block, restoring the previous setting after."""
    prev = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = prev


@dataclass(frozen=True)
class Arch:
    kind: str               # "cnn" or "mlp"
    image_size: int         # square images, one channel
    classes: int = 10
    channels: tuple[int, int] = (8, 16)
    hidden: int = 32
    features: int = 0       # mlp only: input width; 0: image_size ** 2

    def __post_init__(self):
        if self.kind not in ("cnn", "mlp"):
            raise ValueError(f"unknown architecture {self.kind!r}")
        if self.kind == "cnn" and self.image_size < 4:
            raise ValueError("the CNN pools twice: images must be at least 4x4")

    # -- shapes ------------------------------------------------------------------------------
    def shapes(self) -> list[tuple[int, ...]]:
        s, k = self.image_size, self.classes
        if self.kind == "mlp":
            return [(self.hidden, self.features or s * s), (self.hidden,), (k, self.hidden), (k,)]
        c1, c2 = self.channels
        flat = c2 * (s // 4) ** 2
        return [(c1, 1, 3, 3), (c1,), (c2, c1, 3, 3), (c2,), (k, flat), (k,)]

    def layers(self) -> list[tuple[str, int]]:
        """(layer name, parameter count incl. bias) in flat-vector order."""
        names = ["hidden", "out"] if self.kind == "mlp" else ["conv1", "conv2", "fc"]
        shapes = self.shapes()
        return [(n, math.prod(shapes[2 * j]) + math.prod(shapes[2 * j + 1])) for j, n in enumerate(names)]

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.shapes())

    # -- init --------------------------------------------------------------------------------
    def init(self, seed: int) -> Params:
        g = torch.Generator().manual_seed(int(seed))
        shapes = self.shapes()
        out: Params = []
        for j in range(0, len(shapes), 2):
            w_shape, b_shape = shapes[j], shapes[j + 1]
            fan_in = math.prod(w_shape[1:])
            bound = 1.0 / math.sqrt(fan_in)
            w = torch.empty(w_shape, dtype=torch.float32).uniform_(-bound, bound, generator=g)
            b = torch.empty(b_shape, dtype=torch.float32).uniform_(-bound, bound, generator=g)
            out += [w, b]
        return out

    def init_flat(self, seed: int) -> torch.Tensor:
        """``init`` as one flat vector (the tensors of :meth:`shapes` in order)."""
        return torch.cat([p.reshape(-1) for p in self.init(seed)])

    def unflatten(self, flat: torch.Tensor) -> Params:
        """Views of a flat parameter vector, shaped as :meth:`shapes` (no copy)."""
        if flat.numel() != self.num_params():
            raise ValueError(f"expected {self.num_params()} parameters, got {flat.numel()}")
        sizes = [math.prod(s) for s in self.shapes()]
        return [t.view(s) for t, s in zip(torch.split(flat, sizes), self.shapes())]

    # -- forward -----------------------------------------------------------------------------
    def forward(self, params: Params | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x`` of shape [n, 1, s, s] (float32); ``params`` is the list of
        tensors of :meth:`shapes` or one flat vector."""
        if isinstance(params, torch.Tensor):
            params = self.unflatten(params)
        if self.kind == "mlp":
            w1, b1, w2, b2 = params
            h = F.relu(F.linear(x.reshape(x.shape[0], -1), w1, b1))
            return F.linear(h, w2, b2)
        w1, b1, w2, b2, w3, b3 = params
        with plain_cpu_kernels():  # relu(maxpool(.)) == maxpool(relu(.)), on 4x fewer values
            h = F.relu(F.max_pool2d(F.conv2d(x, w1, b1, padding=1), 2))
            h = F.relu(F.max_pool2d(F.conv2d(h, w2, b2, padding=1), 2))
        return F.linear(h.reshape(h.shape[0], -1), w3, b3)

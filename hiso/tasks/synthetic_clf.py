"""Synthetic classification with its own data per client: label and feature skew, any M.

Every client's data is a pure function of ``(data_seed, client id)``, generated when the client
is asked for a batch and not kept, so M = 10,000 clients cost nothing up front (tested):

* ``classes`` class means ``mu_c ~ N(0, separation^2 I_dim)``, shared by every client
  (``numpy.random.default_rng([data_seed, 0x5C1F])``).
* client k (``default_rng([data_seed, 0x5C1E, k])``): its label mix ``p_k ~
  Dirichlet(alpha 1)`` (label skew; ``alpha: null`` gives every client the uniform mix), a
  feature shift ``s_k ~ N(0, feature_shift^2 I)`` and a scale ``a_k = exp(N(0,
  feature_scale^2))`` (feature skew);
* its ``examples`` training examples (``default_rng([data_seed, 0x5C1D, k])``): ``y ~ p_k``,
  ``x = a_k (mu_y + noise e) + s_k`` with ``e ~ N(0, I)``.

The dev and eval splits are held-out examples of the federation as a whole: example i comes
from a client drawn uniformly from the M clients, with that client's label mix and features
(``default_rng([data_seed, 0xDE5])`` and ``[data_seed, 0xE5A1]``), so they depend on M and
``data_seed`` only (every run seed of a study sees the same splits). Learning rates are
selected on dev; eval is reported.

A batch is ``batch_size`` distinct examples of the client's data drawn by
``default_rng([seed, client, round, step])`` (all of it when smaller), as in the digits task.
The model is a one-hidden-layer MLP (:class:`hiso.vision.Arch` ``mlp`` on feature vectors)
held as one flat float32 vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..directions import derive
from ..partition import label_skew
from ..schema import SEED_MAX
from ..vision import Arch
from .classifier import FlatClassifierTask

_MEANS, _CLIENT, _TRAIN, _DEV, _EVAL = 0x5C1F, 0x5C1E, 0x5C1D, 0xDE5, 0xE5A1
#: clients summarised in data.json (the first ones: the summary must not cost O(M))
DESCRIBE_CLIENTS = 500


@dataclass
class SyntheticClfConfig:
    dim: int = field(default=32, metadata={"ge": 1})          # feature width
    classes: int = field(default=10, metadata={"ge": 2})
    hidden: int = field(default=32, metadata={"ge": 1})       # MLP hidden width
    examples: int = field(default=40, metadata={"ge": 1})     # training examples per client
    #: label Dirichlet concentration per client; null: every client the uniform label mix
    alpha: float | None = field(default=0.5, metadata={"gt": 0})
    feature_shift: float = field(default=0.5, metadata={"ge": 0})  # sd of a client's shift
    feature_scale: float = field(default=0.2, metadata={"ge": 0})  # sd of its log scale
    separation: float = field(default=0.5, metadata={"gt": 0})     # sd of the class means
    noise: float = field(default=1.0, metadata={"gt": 0})
    data_seed: int = field(default=0, metadata={"ge": 0, "le": SEED_MAX})
    dev_size: int = field(default=1000, metadata={"ge": 1})
    eval_size: int = field(default=2000, metadata={"ge": 1})
    batch_size: int = field(default=32, metadata={"ge": 1})


class Population:
    """The generative model of a federation: pure functions of (config, client id)."""

    def __init__(self, cfg: SyntheticClfConfig, num_clients: int):
        self.cfg = cfg
        self.num_clients = num_clients
        rng = np.random.default_rng([cfg.data_seed, _MEANS])
        self.means = rng.normal(size=(cfg.classes, cfg.dim)) * cfg.separation

    def client(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Client k's label mix p (classes,), feature shift (dim,) and scale."""
        c = self.cfg
        rng = np.random.default_rng([c.data_seed, _CLIENT, int(k)])
        if c.alpha is None:
            p = np.full(c.classes, 1.0 / c.classes)
        else:
            p = rng.dirichlet(np.full(c.classes, float(c.alpha)))
            if not np.all(np.isfinite(p)) or p.sum() <= 0:  # underflow at tiny alpha
                p = np.eye(c.classes)[int(np.argmax(np.nan_to_num(p, nan=-1.0)))]
            p = p / p.sum()
        shift = rng.normal(size=c.dim) * c.feature_shift
        scale = float(np.exp(rng.normal() * c.feature_scale))
        return p, shift, scale

    def _features(self, rng, y, shift, scale) -> np.ndarray:
        e = rng.normal(size=(len(y), self.cfg.dim))
        return scale[:, None] * (self.means[y] + self.cfg.noise * e) + shift

    def train(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Client k's training examples: float32 x [examples, dim], int64 y."""
        c = self.cfg
        p, shift, scale = self.client(k)
        rng = np.random.default_rng([c.data_seed, _TRAIN, int(k)])
        y = rng.choice(c.classes, size=c.examples, p=p)
        x = self._features(rng, y, shift[None, :], np.full(len(y), scale))
        return x.astype(np.float32), y.astype(np.int64)

    def held_out(self, tag: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n examples, each of a client drawn uniformly from the federation."""
        c = self.cfg
        rng = np.random.default_rng([c.data_seed, tag])
        who = rng.integers(self.num_clients, size=n)
        uniq, inv = np.unique(who, return_inverse=True)
        params = [self.client(k) for k in uniq]
        cdf = np.cumsum(np.stack([p for p, _, _ in params]), axis=1)[inv]
        y = np.minimum((cdf < rng.random(n)[:, None]).sum(axis=1), c.classes - 1)
        shift = np.stack([s for _, s, _ in params])[inv]
        scale = np.array([a for _, _, a in params])[inv]
        x = self._features(rng, y, shift, scale)
        return x.astype(np.float32), y.astype(np.int64)


class SyntheticClfTask(FlatClassifierTask):
    name = "synthetic_clf"
    Config = SyntheticClfConfig

    config_size_key = "task.dim/task.hidden/task.classes"

    @staticmethod
    def config_params(cfg: SyntheticClfConfig) -> int:
        return _arch(cfg).num_params()

    def __init__(self, cfg: SyntheticClfConfig, num_clients: int, seed: int, runtime=None):
        super().__init__(cfg, num_clients, seed, runtime)
        self.population = Population(cfg, num_clients)
        self.dev = tuple(map(torch.from_numpy, self.population.held_out(_DEV, cfg.dev_size)))
        self.eval = tuple(map(torch.from_numpy, self.population.held_out(_EVAL, cfg.eval_size)))
        self.arch = _arch(cfg)
        self._x0 = self.arch.init_flat(derive(seed, 0x5C1C))

    def client_weight(self, client: int) -> float:
        return float(self.cfg.examples)

    def client_data(self, client: int):
        x, y = self.population.train(client)
        return torch.from_numpy(x), torch.from_numpy(y)

    def describe(self) -> dict:
        """The generative model's settings and the label skew of the first clients."""
        k = min(self.num_clients, DESCRIBE_CLIENTS)
        labels = [self.population.train(c)[1] for c in range(k)]
        parts = np.split(np.arange(k * self.cfg.examples), k)
        return {
            "clients": self.num_clients, "examples_per_client": self.cfg.examples,
            "num_params": self.num_params(),
            "layers": [{"name": n, "size": s} for n, s in self.arch.layers()],
            "dev": int(len(self.dev[1])), "eval": int(len(self.eval[1])),
            "alpha": self.cfg.alpha, "feature_shift": self.cfg.feature_shift,
            "feature_scale": self.cfg.feature_scale,
            f"label_skew_first_{k}_clients": label_skew(parts, np.concatenate(labels)),
        }


def _arch(cfg: SyntheticClfConfig) -> Arch:
    return Arch("mlp", 0, cfg.classes, hidden=cfg.hidden, features=cfg.dim)

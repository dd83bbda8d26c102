"""Handwritten digits: a small CNN (or MLP) federated over non-IID clients (the paper's Fig. 5).

Data sources (``source``):

* ``mnist``: MNIST through ``datasets.load_dataset("ylecun/mnist")`` (hub or local cache);
  28x28 images. Train and dev come from MNIST's ``train`` split, eval from its ``test`` split.
* ``sklearn_digits``: scikit-learn's bundled handwritten digits (8x8, 1,797 images, 10
  classes; real data that ships with the package, so it needs no network and no cache).
  Eval, dev and train are disjoint slices of one seeded permutation.
* ``auto``: MNIST when ``datasets`` can provide it, else the scikit-learn digits (with one line
  on stderr). The source actually used is written to ``data.json`` in the run directory.

Splits are fixed by ``data_seed`` (not the run seed), so every seed of a study, selection and
report seeds alike, sees the same train/dev/eval examples: learning rates are selected on *dev*,
numbers are reported on *eval*. The train split is partitioned over the clients with
:func:`hiso.partition.dirichlet_partition` (label Dirichlet(alpha); ``alpha: null`` gives
:func:`~hiso.partition.iid_partition`), also seeded by ``data_seed``.

A batch is a deterministic function of (run seed, client, round, step): ``batch_size`` distinct
examples of the client's shard drawn by ``numpy.random.default_rng([seed, client, round,
step])``, or the whole shard when it is smaller.

Pixels are scaled to [0, 1] and standardised with the train split's mean and standard deviation
(one scalar each).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import io
from ..directions import derive
from ..errors import UserError
from ..partition import dirichlet_partition, iid_partition, label_counts, label_skew
from ..vision import Arch
from ..schema import SEED_MAX
from .classifier import FlatClassifierTask

MNIST_HUB = "ylecun/mnist"


@dataclass
class DigitsConfig:
    source: Literal["auto", "sklearn_digits", "mnist"] = "auto"
    model: Literal["cnn", "mlp"] = "cnn"
    channels: list[int] = field(default_factory=lambda: [8, 16])   # CNN conv widths
    hidden: int = field(default=32, metadata={"ge": 1})              # MLP hidden width
    #: label Dirichlet concentration of the client partition; null for an IID split
    alpha: float | None = field(default=1.0, metadata={"gt": 0})
    min_client_size: int = field(default=1, metadata={"ge": 1})
    data_seed: int = field(default=0, metadata={"ge": 0, "le": SEED_MAX})
    eval_size: int | None = field(default=400, metadata={"ge": 1})   # null: all available
    dev_size: int = field(default=200, metadata={"ge": 1})
    train_size: int | None = field(default=None, metadata={"ge": 1}) # null: the rest
    batch_size: int = field(default=32, metadata={"ge": 1})
    cache_dir: str | None = None  # datasets' cache (HF_HOME by default)

    def check(self, path: str) -> None:
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise UserError(f"{path}.channels: expected two positive conv widths, got {self.channels}")


# -- data ----------------------------------------------------------------------------------------
@dataclass
class Source:
    """float32 images [n, s, s] in [0, 1] and int64 labels, per original split (MNIST has a
    test split; the scikit-learn digits do not)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray | None = None   # None: eval is carved from train
    test_y: np.ndarray | None = None


_SOURCES: dict[tuple, Source] = {}  # in-process cache: several runs in one process load once


def _sklearn_digits_file() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, located without importing scikit-learn (whose
    import costs seconds per process); None when the layout differs."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


def load_sklearn_digits() -> Source:
    """The 1,797 8x8 digits shipped with scikit-learn (what ``load_digits`` returns), in [0, 1]."""
    path = _sklearn_digits_file()
    if path is not None:
        data = np.loadtxt(path, delimiter=",", dtype=np.float64)
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UserError("task.source: sklearn_digits needs scikit-learn (pip install scikit-learn)") from None
        d = load_digits()
        images, target = d.images, d.target
    return Source("sklearn_digits", (images / 16.0).astype(np.float32), target.astype(np.int64))


def _images(ds) -> tuple[np.ndarray, np.ndarray]:
    imgs = np.stack([np.asarray(im, dtype=np.uint8) for im in ds["image"]])
    return imgs.astype(np.float32) / 255.0, np.asarray(ds["label"], dtype=np.int64)


def load_mnist(cache_dir: str | None = None) -> Source:
    """MNIST through ``datasets``; raises UserError (one line) when it cannot be had."""
    try:
        import datasets

        train = datasets.load_dataset(MNIST_HUB, split="train", cache_dir=cache_dir)
        test = datasets.load_dataset(MNIST_HUB, split="test", cache_dir=cache_dir)
    except Exception as exc:
        offline = any(os.environ.get(k, "") not in ("", "0") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise UserError(f"task.source: cannot load {MNIST_HUB}{' in offline mode' if offline else ''} "
                        f"({msg}); run datasets.load_dataset({MNIST_HUB!r}) once online with the "
                        f"same HF_HOME, or use task.source=sklearn_digits") from None
    tx, ty = _images(train)
    ex, ey = _images(test)
    return Source("mnist", tx, ty, ex, ey)


def load_source(source: str, cache_dir: str | None = None) -> Source:
    key = (source, cache_dir)
    if key in _SOURCES:
        return _SOURCES[key]
    if source == "sklearn_digits":
        src = load_sklearn_digits()
    elif source == "mnist":
        src = load_mnist(cache_dir)
    elif source == "auto":
        try:
            src = load_mnist(cache_dir)
        except UserError as exc:
            print(f"hiso: digits: MNIST unavailable, using scikit-learn's digits ({exc})", file=sys.stderr)
            src = load_sklearn_digits()
    else:
        raise UserError(f"task.source: unknown source {source!r}")
    _SOURCES[key] = src
    return src


@dataclass
class Splits:
    source: str
    train_x: np.ndarray
    train_y: np.ndarray
    dev_x: np.ndarray
    dev_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray
    #: indices into the source's train split (train, dev; eval too when it has no test split)
    #: or its test split (eval, for MNIST)
    train_idx: np.ndarray | None = None
    dev_idx: np.ndarray | None = None
    eval_idx: np.ndarray | None = None


def make_splits(src: Source, cfg: DigitsConfig) -> Splits:
    """Disjoint train/dev/eval, fixed by ``data_seed``."""
    rng = np.random.default_rng([cfg.data_seed, 0xD161])
    order = rng.permutation(len(src.train_y))
    if src.test_x is None:
        n_eval = cfg.eval_size if cfg.eval_size is not None else len(order) // 4
        ev, rest = order[:n_eval], order[n_eval:]
        eval_x, eval_y = src.train_x[ev], src.train_y[ev]
    else:
        rest = order
        ev = rng.permutation(len(src.test_y))[: cfg.eval_size]
        eval_x, eval_y = src.test_x[ev], src.test_y[ev]
    dev, rest = rest[: cfg.dev_size], rest[cfg.dev_size:]
    train = rest if cfg.train_size is None else rest[: cfg.train_size]
    if len(train) < 1 or len(dev) < cfg.dev_size or len(eval_y) < 1:
        raise UserError(f"task: {src.name} has {len(src.train_y)} examples, too few for "
                        f"eval_size={cfg.eval_size}, dev_size={cfg.dev_size}, train_size={cfg.train_size}")
    return Splits(src.name, src.train_x[train], src.train_y[train], src.train_x[dev], src.train_y[dev],
                  eval_x, eval_y, train, dev, ev)


def partition(labels: np.ndarray, n_clients: int, cfg: DigitsConfig) -> list[np.ndarray]:
    try:
        if cfg.alpha is None:
            return iid_partition(len(labels), n_clients, derive(cfg.data_seed, 0xFA))
        return dirichlet_partition(labels, n_clients, cfg.alpha, derive(cfg.data_seed, 0xFA),
                                   min_size=cfg.min_client_size)
    except ValueError as exc:
        raise UserError(f"task: cannot partition {len(labels)} training examples over "
                        f"{n_clients} clients ({exc})") from None


# -- the task ------------------------------------------------------------------------------------
class DigitsTask(FlatClassifierTask):
    name = "digits"
    Config = DigitsConfig

    config_size_key = "task.channels/task.hidden"

    @staticmethod
    def config_params(cfg: DigitsConfig) -> int:
        # a lower bound: the smallest images any source has (scikit-learn's 8x8)
        size = 28 if cfg.source == "mnist" else 8
        return Arch(cfg.model, size, 10, tuple(cfg.channels), cfg.hidden).num_params()

    def __init__(self, cfg: DigitsConfig, num_clients: int, seed: int, runtime=None):
        super().__init__(cfg, num_clients, seed, runtime)
        src = load_source(cfg.source, cfg.cache_dir)
        sp = make_splits(src, cfg)
        self.source = sp.source
        self.splits = sp
        mean, std = float(sp.train_x.mean()), float(sp.train_x.std()) or 1.0
        self.norm = (mean, std)

        def tensor(x):
            return torch.from_numpy(((x - mean) / std).astype(np.float32)).unsqueeze(1).contiguous()

        self.train_x, self.train_y = tensor(sp.train_x), torch.from_numpy(sp.train_y)
        self.dev = (tensor(sp.dev_x), torch.from_numpy(sp.dev_y))
        self.eval = (tensor(sp.eval_x), torch.from_numpy(sp.eval_y))
        self.parts = partition(sp.train_y, num_clients, cfg)
        self.client_x = [self.train_x[torch.from_numpy(p)] for p in self.parts]
        self.client_y = [self.train_y[torch.from_numpy(p)] for p in self.parts]
        self.arch = Arch(cfg.model, int(sp.train_x.shape[-1]), 10, tuple(cfg.channels), cfg.hidden)
        # one flat float32 vector (layer tensors in Arch.shapes order): one seeded draw per
        # direction, and H.npy is directly the per-parameter diagonal
        self._x0 = self.arch.init_flat(derive(seed, 0x1217))

    # -- data --------------------------------------------------------------------------------
    def client_weight(self, client: int) -> float:
        return float(len(self.parts[client]))

    def client_data(self, client: int):
        return self.client_x[client], self.client_y[client]

    def describe(self) -> dict:
        sizes = [len(p) for p in self.parts]
        return {
            "source": self.source, "image_size": int(self.splits.train_x.shape[-1]),
            "model": self.cfg.model, "num_params": self.num_params(),
            "layers": [{"name": n, "size": k} for n, k in self.arch.layers()],
            "train": len(self.splits.train_y), "dev": len(self.splits.dev_y),
            "eval": len(self.splits.eval_y), "clients": self.num_clients,
            "alpha": self.cfg.alpha, "client_size_min": int(min(sizes)),
            "client_size_median": float(np.median(sizes)), "client_size_max": int(max(sizes)),
            "label_skew": label_skew(self.parts, self.splits.train_y),
            "normalisation": {"mean": self.norm[0], "std": self.norm[1]},
        }

    def write_artifacts(self, out_dir: Path) -> None:
        """``data.json``: the source used, split sizes, partition summary; ``client_labels.json``:
        the per-client label counts."""
        super().write_artifacts(out_dir)
        counts = label_counts(self.parts, self.splits.train_y)
        io.atomic_write_text(Path(out_dir) / "client_labels.json",
                             json.dumps([{str(k): v for k, v in c.items()} for c in counts]) + "\n")

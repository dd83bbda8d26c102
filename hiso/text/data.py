"""Loading a text task's examples, and cutting fixed train/dev/eval splits.

Sources, in order of precedence:
1. ``data_dir``: local JSON-lines files ``{data_dir}/{split}.jsonl`` whose rows have the hub
   data set's columns (what ``hiso.text.fixtures.write_task_files`` writes). Read with
   ``datasets.load_dataset("json", ...)``, so tests and real runs share the loading code.
2. A synthetic task's generator (no download at all).
3. The hub, through ``datasets.load_dataset(hub_name, config, split=...)`` and its cache
   (``HF_HOME`` / ``cache_dir``). Offline without a cache this fails within about a second with
   a one-line :class:`~hiso.errors.UserError` saying how to provide the data.

Splits (see :func:`make_splits`): GLUE/SuperGLUE test labels are hidden, so the labelled
``validation`` split is the *eval* split (reported numbers), and *train* and *dev*
(hyper-parameter selection) are disjoint samples of the ``train`` split. Nothing is ever selected
on the eval split.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import UserError
from .templates import Sample, TextTaskSpec


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def hub_offline():
    """``datasets`` and ``huggingface_hub`` in offline mode for the block. Both read their
    offline flags when imported, so setting HF_HUB_OFFLINE now would come too late: the module
    flags are set, and restored after. Without this a load that needs no network (local files,
    a cached data set) still asks the hub first and, with no network, retries for a minute."""
    import datasets.config as dcfg
    import huggingface_hub.constants as hcfg

    saved = [(mod, name, getattr(mod, name)) for mod, name in
             ((dcfg, "HF_HUB_OFFLINE"), (dcfg, "HF_DATASETS_OFFLINE"), (hcfg, "HF_HUB_OFFLINE"))
             if hasattr(mod, name)]
    for mod, name, _ in saved:
        setattr(mod, name, True)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def offline_requested() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in
               ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can the hub's host be reached at all (a TCP connect, within ``timeout`` seconds)?"""
    import socket
    from urllib.parse import urlparse

    import threading

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    ok: list[bool] = []

    def probe():
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout).close()
            ok.append(True)
        except (OSError, ValueError):
            pass

    # the name lookup has no timeout of its own: wait for the probe at most ``timeout``
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _rows_from_files(spec: TextTaskSpec, split: str, data_dir, cache_dir):
    import datasets

    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(
            f"task {spec.name}: no file {path} (data_dir needs one JSON-lines file per split "
            f"with columns {', '.join(spec.columns)})"
        )
    try:
        with hub_offline():  # local files: no network needed
            ds = datasets.load_dataset(
                "json", data_files={split: str(path)}, split=split, cache_dir=cache_dir
            )
    except Exception as exc:  # malformed JSON, unreadable file ...
        raise UserError(f"task {spec.name}: cannot read {path}: {_one_line(exc)}") from None
    missing = [c for c in spec.columns if c not in ds.column_names]
    if missing:
        raise UserError(f"task {spec.name}: {path} lacks column(s) {', '.join(missing)}")
    return ds


def _rows_from_hub(spec: TextTaskSpec, split: str, cache_dir):
    import datasets

    # no network and no offline variable set: read the cache in offline mode at once rather
    # than let the hub client retry for a minute
    offline = offline_requested() or not hub_reachable()
    try:
        with hub_offline() if offline else contextlib.nullcontext():
            return datasets.load_dataset(
                spec.hub_name,
                spec.hub_config,
                split=split,
                cache_dir=cache_dir,
                revision=spec.hub_revision,
            )
    except Exception as exc:
        config = f", {spec.hub_config!r}" if spec.hub_config else ""
        mode = ""
        if offline:
            mode = (" in offline mode" if offline_requested() else
                    " (the hub is unreachable, so offline: set HF_HUB_OFFLINE=1 and "
                    "HF_DATASETS_OFFLINE=1 to skip the check)")
        raise UserError(
            f"task {spec.name}: cannot load dataset {spec.hub_id} split {split}{mode} "
            f"({_one_line(type(exc).__name__ + ': ' + str(exc), 120)}). Provide it: run "
            f"datasets.load_dataset({spec.hub_name!r}{config}) once online with the same "
            f"HF_HOME, or pass data_dir=DIR holding {spec.train_split}.jsonl and "
            f"{spec.eval_split}.jsonl with columns {', '.join(spec.columns)}"
        ) from None


def load_examples(
    spec: TextTaskSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> list[Sample]:
    """All labelled examples of one split, as Samples with uids ``{task}/{split}/{row}``.

    Unlabelled rows (label -1) are dropped; a split with no labelled row is an error.
    """
    if data_dir is not None:
        rows = _rows_from_files(spec, split, data_dir, None if cache_dir is None else str(cache_dir))
    elif spec.synthetic_rows is not None:
        try:
            rows = spec.synthetic_rows(split)
        except KeyError as exc:
            raise UserError(f"task {spec.name}: {exc.args[0]}") from None
    elif spec.hub_name is not None:
        rows = _rows_from_hub(spec, split, None if cache_dir is None else str(cache_dir))
    else:
        raise UserError(f"task {spec.name} has no hub data set: pass data_dir")

    samples = []
    for position, row in enumerate(rows):
        try:
            sample = spec.to_sample(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"task {spec.name}: bad row {position} in split {split}: {_one_line(exc)}"
            ) from None
        if sample is not None:
            samples.append(replace(sample, uid=f"{spec.name}/{split}/{position}"))
    if not samples:
        raise UserError(f"task {spec.name}: split {split} has no labelled example")
    return samples


@dataclass(frozen=True)
class Splits:
    """Disjoint example lists: train (clients' data), dev (selection), eval (reporting)."""

    train: list[Sample]
    dev: list[Sample]
    eval: list[Sample]


def _take(pool: Sequence[Sample], counts: Sequence[int | None], rng, what: str) -> list[list]:
    need = sum(c for c in counts if c is not None)
    if any(c is not None and c < 0 for c in counts):
        raise UserError(f"{what}: split sizes must be >= 0, got {list(counts)}")
    if need > len(pool):
        raise UserError(f"{what}: asked for {need} examples but only {len(pool)} exist")
    order = rng.permutation(len(pool))
    out, start = [], 0
    for c in counts:
        stop = len(pool) if c is None else start + c
        out.append([pool[i] for i in order[start:stop]])
        start = stop
    return out


def make_splits(
    examples: Sequence[Sample],
    n_train: int,
    n_dev: int,
    n_eval: int | None,
    seed: int,
    eval_examples: Sequence[Sample] | None = None,
) -> Splits:
    """Fixed-size, disjoint, seed-determined train/dev/eval lists.

    With ``eval_examples`` (the source's labelled validation split): eval is drawn from it and
    train/dev from ``examples``. Without it, all three are disjoint draws from ``examples``.
    ``n_eval=None`` takes every remaining example for eval. Asking for more than exists is a
    :class:`UserError` rather than a silent shrink, so the reported sizes are the real ones.
    """
    rng = np.random.default_rng(seed)
    if eval_examples is None:
        train, dev, ev = _take(examples, [n_train, n_dev, n_eval], rng, "train+dev+eval")
    else:
        train, dev = _take(examples, [n_train, n_dev], rng, "train+dev")
        (ev,) = _take(eval_examples, [n_eval], rng, "eval")
    return Splits(train=train, dev=dev, eval=ev)


def load_splits(
    spec: TextTaskSpec,
    n_train: int,
    n_dev: int,
    n_eval: int | None,
    seed: int,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Splits:
    """Load the spec's train and eval splits and cut them with :func:`make_splits`."""
    train = load_examples(spec, spec.train_split, data_dir, cache_dir)
    ev = load_examples(spec, spec.eval_split, data_dir, cache_dir)
    return make_splits(train, n_train, n_dev, n_eval, seed, eval_examples=ev)


"""Federated partitions: which client holds which example.

A partition is a list of index arrays, one per client; every example index appears in exactly one
client's array, and each array is sorted (the client's own batch sampler decides the order).
Everything is a pure function of its arguments and ``seed`` (a dedicated
``numpy.random.default_rng``), so a run, its resume and a later re-analysis agree on who held
what. The functions only see example counts or a label vector, so LLM tasks and image tasks use
them alike.

Empty clients: a client with no data cannot produce a batch, so both splitters guarantee at least
``min_size`` examples per client (1 by default) and raise ``ValueError`` when that is impossible
(fewer than ``n_clients * min_size`` examples). See :func:`dirichlet_partition` for how the
Dirichlet draw is repaired when it leaves a client short.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_counts(n_examples: int, n_clients: int, min_size: int) -> None:
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")
    if n_examples < n_clients * min_size:
        raise ValueError(
            f"cannot give each of {n_clients} clients at least {min_size} example(s) "
            f"from {n_examples} examples"
        )


def iid_partition(n_examples: int, n_clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle ``range(n_examples)`` and cut it into ``n_clients`` near-equal parts.

    Client sizes differ by at most one. Raises ``ValueError`` if ``n_examples < n_clients``.
    """
    _check_counts(n_examples, n_clients, 1)
    order = np.random.default_rng(seed).permutation(n_examples)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, n_clients)]


def dirichlet_partition(
    labels: Sequence | np.ndarray,
    n_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Label-skewed partition (Hsu et al. 2019): per class, client shares ~ Dirichlet(alpha).

    For each class c (in sorted label order), its examples are shuffled and cut among the clients
    in proportions p_c ~ Dir(alpha * 1). Small alpha gives each client few classes; large alpha
    approaches an IID split.

    Repair rule (instead of redrawing until lucky, which can loop for a long time at small
    alpha): while some client holds fewer than ``min_size`` examples, move one randomly chosen
    example from the currently largest client to the smallest (ties: lowest client index).
    At most ``n_clients * min_size`` moves happen, and the moves use the same seeded generator,
    so the result stays deterministic. Raises ``ValueError`` if ``len(labels) <
    n_clients * min_size`` or ``alpha <= 0``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    n = len(labels)
    _check_counts(n, n_clients, min_size)
    rng = np.random.default_rng(seed)

    _, class_of = np.unique(labels, return_inverse=True)
    buckets: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in range(int(class_of.max()) + 1 if n else 0):
        members = rng.permutation(np.flatnonzero(class_of == c))
        shares = rng.dirichlet(np.full(n_clients, float(alpha)))
        if not np.all(np.isfinite(shares)) or shares.sum() <= 0:  # underflow at tiny alpha
            shares = np.eye(n_clients)[int(np.argmax(np.nan_to_num(shares, nan=-1.0)))]
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for client, piece in enumerate(np.split(members, cuts)):
            buckets[client].append(piece)
    parts = [
        np.concatenate(b) if b else np.empty(0, dtype=np.int64) for b in buckets
    ]

    sizes = np.array([len(p) for p in parts])
    while sizes.min() < min_size:
        receiver, donor = int(np.argmin(sizes)), int(np.argmax(sizes))
        pick = int(rng.integers(sizes[donor]))
        moved = parts[donor][pick]
        parts[donor] = np.delete(parts[donor], pick)
        parts[receiver] = np.append(parts[receiver], moved)
        sizes[donor] -= 1
        sizes[receiver] += 1
    return [np.sort(p).astype(np.int64) for p in parts]


def _py(value):
    """numpy scalar -> plain Python value, so summaries serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


def label_counts(parts: Sequence[np.ndarray], labels: Sequence | np.ndarray) -> list[dict]:
    """Per-client ``{label: count}`` over every label present in ``labels`` (zeros included).

    Keys are plain Python values in sorted label order, ready for a JSON/CSV summary.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    out = []
    for part in parts:
        held = labels[np.asarray(part, dtype=np.int64)]
        out.append({_py(c): int(np.sum(held == c)) for c in classes})
    return out


def label_skew(parts: Sequence[np.ndarray], labels: Sequence | np.ndarray) -> float:
    """Mean total-variation distance between each client's label mix and the global one.

    0 for perfectly IID label proportions; approaches 1 - (global share of a class) when each
    client holds a single class. Size-unweighted: every client counts once.
    """
    labels = np.asarray(labels)
    counts = label_counts(parts, labels)
    classes = list(counts[0].keys()) if counts else []
    global_p = np.array([np.sum(labels == c) for c in classes], dtype=float)
    global_p /= global_p.sum()
    tvs = []
    for row in counts:
        local = np.array([row[c] for c in classes], dtype=float)
        if local.sum() == 0:
            continue
        tvs.append(0.5 * np.abs(local / local.sum() - global_p).sum())
    return float(np.mean(tvs)) if tvs else 0.0

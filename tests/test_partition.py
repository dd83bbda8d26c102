"""Federated partitions: exact cover, determinism by seed, and Dirichlet label skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hiso.partition import dirichlet_partition, iid_partition, label_counts, label_skew


def assert_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert np.array_equal(np.sort(joined), np.arange(n))  # every example exactly once
    assert all(np.array_equal(p, np.sort(p)) for p in parts)


@settings(max_examples=60, deadline=None)
@given(n_clients=st.integers(1, 20), extra=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_iid_partition_covers_once_balanced_and_deterministic(n_clients, extra, seed):
    n = n_clients + extra
    parts = iid_partition(n, n_clients, seed)
    assert len(parts) == n_clients
    assert_exact_cover(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    again = iid_partition(n, n_clients, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


@settings(max_examples=80, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=300),
    n_clients=st.integers(1, 12),
    alpha=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_partition_covers_once_without_empty_clients(labels, n_clients, alpha, seed):
    if len(labels) < n_clients:
        with pytest.raises(ValueError, match="at least 1 example"):
            dirichlet_partition(labels, n_clients, alpha, seed)
        return
    parts = dirichlet_partition(labels, n_clients, alpha, seed)
    assert len(parts) == n_clients
    assert_exact_cover(parts, len(labels))
    assert min(len(p) for p in parts) >= 1
    again = dirichlet_partition(labels, n_clients, alpha, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    counts = label_counts(parts, labels)
    for k in set(labels):  # per-class totals survive the split
        assert sum(c[k] for c in counts) == labels.count(k)


def test_seed_changes_the_partition_and_min_size_is_honoured():
    labels = np.repeat(np.arange(10), 60)
    a = dirichlet_partition(labels, 8, 0.3, seed=1)
    b = dirichlet_partition(labels, 8, 0.3, seed=2)
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    tight = dirichlet_partition(labels, 20, 0.01, seed=0, min_size=25)
    assert min(len(p) for p in tight) >= 25
    assert_exact_cover(tight, len(labels))
    with pytest.raises(ValueError, match="at least 31 example"):
        dirichlet_partition(labels, 20, 1.0, seed=0, min_size=31)
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(labels, 2, 0.0, seed=0)
    with pytest.raises(ValueError):
        iid_partition(3, 4, seed=0)


def test_dirichlet_skew_grows_as_alpha_shrinks():
    labels = np.repeat(np.arange(10), 200)  # 10 balanced classes, 2000 examples
    skew = {
        alpha: np.mean([label_skew(dirichlet_partition(labels, 16, alpha, s), labels)
                        for s in range(5)])
        for alpha in (0.05, 0.3, 1.0, 100.0)
    }
    assert skew[0.05] > skew[0.3] > skew[1.0] > skew[100.0]
    assert skew[0.05] > 0.7  # clients hold one or two classes
    assert skew[100.0] < 0.1  # close to IID
    iid = label_skew(iid_partition(len(labels), 16, 0), labels)
    assert iid < 0.15


def test_label_counts_and_skew_by_hand():
    labels = ["a", "b", "b", "c", "a", "a"]
    parts = [np.array([0, 4, 5]), np.array([1, 2, 3])]
    assert label_counts(parts, labels) == [{"a": 3, "b": 0, "c": 0}, {"a": 0, "b": 2, "c": 1}]
    # global (1/2, 1/3, 1/6); client 0 (1, 0, 0): TV = 1/2; client 1 (0, 2/3, 1/3): TV = 1/2
    assert label_skew(parts, labels) == pytest.approx(0.5)
    ints = label_counts([np.array([0, 1])], np.array([3, 7]))
    assert ints == [{3: 1, 7: 1}] and all(type(k) is int for k in ints[0])

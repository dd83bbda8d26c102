"""Engine additions made for the LM work: sampling into a buffer, the rademacher_bits kind, and
accuracy-style (max-mode) convergence tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hiso.directions import DirectionSampler, stream_seed
from hiso.report.convergence import convergence_table


@pytest.mark.parametrize("kind", ["gaussian", "rademacher", "rademacher_bits"])
@pytest.mark.parametrize("shape", [(3, 1001), (4, 16), (7,)])
def test_sampling_into_a_buffer_gives_the_same_values(kind, shape):
    s = DirectionSampler(kind)
    like = torch.empty(shape)
    buf = torch.full(shape, 5.0)
    got = s.sample(11, 3, like, out=buf)
    assert got is buf and torch.equal(buf, s.sample(11, 3, like))


def test_rademacher_bits_follows_its_documented_layout():
    like = torch.empty(5, 37)  # 185 signs: not a multiple of 8 or 64
    u = DirectionSampler("rademacher_bits").sample(42, 7, like)
    g = torch.Generator().manual_seed(stream_seed(42, 7))
    words = torch.empty(3, dtype=torch.int64)
    words.random_(-(1 << 63), None, generator=g)
    raw = words.view(torch.uint8).tolist()
    want = [1.0 - 2.0 * ((raw[k // 8] >> (k % 8)) & 1) for k in range(185)]
    assert u.flatten().tolist() == want


def test_rademacher_bits_moments_and_independent_streams():
    s = DirectionSampler("rademacher_bits")
    like = torch.empty(400_000)
    a, b = s.sample(1, 0, like), s.sample(1, 1, like)
    assert set(a.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(a.mean())) < 0.01 and abs(float((a * b).mean())) < 0.01


def _metrics(rows):
    df = pd.DataFrame(rows, columns=["run", "method", "round", "accuracy", "bytes_up", "bytes_down"])
    df["metric"], df["metric_mode"], df["status"], df["task"] = "accuracy", "max", "ok", "lm"
    df["bytes_total"] = df["bytes_up"] + df["bytes_down"]
    return df


def test_max_mode_table_counts_rounds_to_a_level_and_to_the_reference_best():
    df = _metrics([
        ("d0", "decomfl", 0, 0.5, 0, 0), ("d0", "decomfl", 50, 0.7, 100, 300), ("d0", "decomfl", 100, 0.85, 200, 600),
        ("d1", "decomfl", 0, 0.5, 0, 0), ("d1", "decomfl", 50, 0.6, 100, 300), ("d1", "decomfl", 100, 0.75, 200, 600),
        ("h0", "hiso", 0, 0.5, 0, 0), ("h0", "hiso", 50, 0.82, 100, 300), ("h0", "hiso", 100, 0.9, 200, 600),
    ])
    t = convergence_table(df, 1e-2, reach=0.8, reference="decomfl").set_index("method")
    assert t.loc["hiso", "final_accuracy_median"] == 0.9
    assert t.loc["decomfl", "best_accuracy_median"] == pytest.approx(0.8)  # median of 0.85, 0.75
    assert t.loc["hiso", "rounds_to_0.8_median"] == 50
    assert t.loc["hiso", "bytes_to_0.8_median"] == 400
    assert t.loc["decomfl", "runs_reaching_0.8"] == 1
    assert t.loc["decomfl", "rounds_to_0.8_median"] == 100  # over the runs that reached it
    assert t.loc["hiso", "rounds_to_decomfl_best_median"] == 50
    assert t.loc["hiso", "bytes_up_per_round"] == 2


def test_min_mode_table_is_unchanged_by_the_max_mode_columns():
    df = _metrics([("q", "decomfl", 0, 1.0, 0, 0), ("q", "decomfl", 10, 0.005, 40, 80)])
    df["metric_mode"] = "min"
    t = convergence_table(df, 1e-2)
    assert list(t.columns) == ["method", "runs", "final_accuracy_median", "reduction_median",
                               "reduction_min", "rounds_to_0.01x_median", "bytes_up_median",
                               "bytes_down_median", "bytes_up_per_round", "statuses"]
    assert t["rounds_to_0.01x_median"].iloc[0] == 10


@pytest.mark.parametrize("scale", [1e-3, -1e-3, 0.1, 3.0])
def test_scaled_signs_equal_the_sample_times_the_scale(scale):
    """The perturbation's one-gather +-scale gives the bits of sample().mul_(scale), into a
    buffer or not, at sizes with and without a partial byte."""
    s = DirectionSampler("rademacher_bits")
    for shape in [(5,), (64,), (301, 7), (1000, 77)]:
        like = torch.empty(shape)
        want = s.sample(9, 4, like).mul_(scale)
        assert torch.equal(s.scaled_signs(9, 4, like, scale), want)
        out = torch.empty(shape)
        assert torch.equal(s.scaled_signs(9, 4, like, scale, out=out), want)
    with pytest.raises(ValueError):
        DirectionSampler("gaussian").scaled_signs(9, 4, torch.empty(3), 1.0)

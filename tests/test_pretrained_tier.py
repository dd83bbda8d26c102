"""The pretrained tier's pipeline: every method gets an lr grid, a dev selection and report runs.

A dry run reads only configs (no model, no package), so it runs everywhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_lists_grid_selection_and_report_runs_for_every_method():
    tier = yaml.safe_load((ROOT / "configs" / "pretrained.yaml").read_text())["pretrained"]
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "pretrained_all", "-n", "-p", "--forceall", "--cores", "2",
         "--config", "tier=pretrained"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    counts = dict(re.findall(r"^(pretrained_\w+)\s+(\d+)$", text, re.M))
    variants = tier["variants"]
    assert set(variants) == {"hiso", "decomfl", "mezo", "fedavg"}
    grid = sum(len(v["lrs"]) for v in variants.values()) * len(tier["selection_seeds"])
    assert counts == {"pretrained_model": "1", "pretrained_grid": str(grid),
                      "pretrained_select": str(len(variants)),
                      # the first selection round (a checkpoint: a grid at its edge grows later)
                      "pretrained_select_round": str(len(variants)),
                      "pretrained_run": str(len(variants) * len(tier["report_seeds"])),
                      "pretrained_aggregate": "1", "pretrained_report": "1", "pretrained_all": "1"}
    assert len(tier["report_seeds"]) >= 2
    assert not set(tier["report_seeds"]) & set(tier["selection_seeds"])
    for v in variants:
        assert f"--lr-from results/pretrained/selected/{v}.json" in text


def test_hiso_block_runs_as_an_extra_variant_beside_the_tiers_hiso_and_decomfl():
    # issue #15 on the pretrained model: hiso_block gets the tier's grid, selection and report
    # runs (its own lr grid), is left out of the tier's table, and its comparison reads the
    # tier's HiSo and DeComFL report runs (named by variant: the comparison groups by name)
    tier = yaml.safe_load((ROOT / "configs" / "pretrained.yaml").read_text())["pretrained"]
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "hiso_block_pretrained", "-n", "-p", "--forceall",
         "--cores", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, re.M))
    seeds = len(tier["report_seeds"])
    assert counts["pretrained_grid"] == str(sum(len(tier[k][v]["lrs"]) for k, v in
                                                (("variants", "hiso"), ("variants", "decomfl"),
                                                 ("extra_variants", "hiso_block"))))
    assert counts["pretrained_run"] == str(3 * seeds)
    assert "pretrained_report" not in counts and counts["hiso_block_pretrained"] == "1"
    assert '"name": "hiso_block"' in text and "name=hiso_block" in text
    assert "--compare pretrained results/hiso_block/pretrained/metrics.csv hiso" in text

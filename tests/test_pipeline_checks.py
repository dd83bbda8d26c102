"""Two pipeline behaviours, run by Snakemake itself in a copy of the workflow (about half a
minute): a selection at a grid edge grows the grid one step beyond it per checkpoint round, up to
the cap; and the CPU tier's run made to diverge says "diverged" in its table while the pipeline
goes on."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("snakemake")
SMOKE = yaml.safe_load((ROOT / "configs/pipeline.yaml").read_text())["lm"]["smoke"]
# dev accuracy of the fake grid runs: hiso's keeps rising with lr (at the top edge, every round);
# decomfl's peaks inside its grid
DEV = {"hiso": lambda lr: lr, "decomfl": lambda lr: -abs(lr - 0.02)}


def fake_grid_run(d: Path, variant: str, lr: str, seed: int) -> None:
    """A finished grid run directory as `hiso run` leaves it (what `hiso select` reads)."""
    d.mkdir(parents=True)
    cfg = {"name": f"lm-smoke-{variant}", "seed": seed, "method": {"name": variant, "lr": float(lr)},
           "task": {"name": "lm"}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "summary.json").write_text(json.dumps({"status": "ok", "metric": "accuracy"}))
    (d / "metrics.jsonl").write_text(json.dumps({"round": 10, "dev_accuracy": DEV[variant](float(lr))}) + "\n")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("Snakefile", "workflow", "configs", "reference"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    # the tiny model and every grid run already exist (made before: older than nothing), so
    # Snakemake runs only the selection rounds; 0.04 and 0.08 lie beyond hiso's grid
    model = root / SMOKE["model_dir"] / "config.json"
    model.parent.mkdir(parents=True)
    model.write_text("{}")
    lrs = {"hiso": ["0.005", "0.01", "0.02", "0.04", "0.08", "0.16"], "decomfl": ["0.01", "0.02", "0.04"]}
    for v, grid in lrs.items():
        for lr in grid:
            for s in SMOKE["selection_seeds"]:
                fake_grid_run(root / f"results/lm_smoke/grid/{v}/lr{lr}/seed{s}", v, lr, s)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--nolock",
                          "results/lm_smoke/selected/hiso.json", "results/lm_smoke/selected/decomfl.json",
                          "paper_tables/divergence_check.md"],
                         cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return root, out.stdout + out.stderr


def test_a_selection_at_the_grid_edge_grows_the_grid_until_the_cap(pipeline):
    root, log = pipeline
    assert SMOKE["max_extensions"] == 2
    rounds = [json.loads(p.read_text()) for p in sorted((root / "results/lm_smoke/select/hiso").glob("round*.json"))]
    assert [r["extend"] for r in rounds] == [0.04, 0.08, None]      # twice, then the cap
    assert [len(r["grid"]) for r in rounds] == [3, 4, 5]
    sel = json.loads((root / "results/lm_smoke/selected/hiso.json").read_text())
    assert sel["lr"] == 0.08 and sel["extended"] == [0.04, 0.08] and sel["edge_after_cap"]
    assert sel["base_grid"] == [0.005, 0.01, 0.02]                  # 0.16 exists but was never asked for
    inside = json.loads((root / "results/lm_smoke/selected/decomfl.json").read_text())
    assert inside["lr"] == 0.02 and inside["extended"] == [] and not inside["edge_after_cap"]
    assert len(list((root / "results/lm_smoke/select/decomfl").glob("round*.json"))) == 1
    jobs = re.findall(r"^(?:localcheckpoint|localrule|rule|checkpoint) (\w+):", log, re.M)
    assert jobs.count("lm_smoke_select_round") == 4 and jobs.count("lm_smoke_select") == 2
    assert "lm_smoke_grid" not in jobs                             # every grid run was there


def test_the_run_made_to_diverge_is_marked_and_the_pipeline_goes_on(pipeline):
    root, _ = pipeline
    md = (root / "paper_tables/divergence_check.md").read_text()
    row = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "(diverged)" in row["decomfl"] and row["decomfl"].rstrip(" |").endswith("diverged")
    assert "(diverged)" not in row["hiso"] and row["hiso"].rstrip(" |").endswith("ok")
    summary = json.loads((root / "results/divergence_check/decomfl/summary.json").read_text())
    assert summary["status"] == "diverged" and summary["rounds"] < 200
    assert (root / "paper_tables/divergence_check.tex").read_text().count("diverged") >= 2

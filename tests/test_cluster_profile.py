"""Cluster execution and cost before compute: the SLURM profile's dry run of the paper tier
(offline) gives every LM job a GPU and GPU memory from its model's size; `hiso plan` counts the
same runs and labels its GPU-hours as an estimate."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from hiso import plan
from hiso.cli import main
from hiso.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_memory_grows_with_parameters_and_first_order_state():
    assert plan.gpu_memory_mb(2.7e9) > plan.gpu_memory_mb(125e6)
    assert plan.gpu_memory_mb(1e9, method="fedadam") > plan.gpu_memory_mb(1e9, method="hiso")
    assert plan.gpu_memory_mb(1e9, "bfloat16") > plan.gpu_memory_mb(1e9, "float32")
    assert plan.gpu_memory_mb(1e9) % 1024 == 0
    with pytest.raises(UserError, match="forward_dtype 'int3'"):
        plan.gpu_memory_mb(1e9, "int3")


def test_forwards_per_run_count_rounds_clients_and_perturbations():
    base = {"federation": {"rounds": 10, "sampled": 2, "local_steps": 1},
            "method": {"name": "hiso", "perturbations": 5},
            "task": {"n_eval": 0, "n_dev": 0, "batch_size": 16, "eval_batch_size": 16},
            "eval": {"every": 10}}
    assert plan.forwards(base) == 10 * 2 * 6  # 0 eval rows: no eval batches
    assert plan.forwards(plan.resolve(base, ["method.name=mezo"])) == 10 * 6
    assert plan.forwards(plan.resolve(base, ["method={name: fedavg}", "federation.local_steps=5"])) == 10 * 2 * 5 * 3


def test_plan_prints_an_estimate_per_grid(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["plan", "--tier", "paper"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ESTIMATE (not a measurement)")
    cfg = yaml.safe_load((ROOT / "configs/pipeline.yaml").read_text())["lm"]["paper"]
    for grid in cfg["grids"]:
        assert re.search(rf"^{re.escape(grid)}\s+\d+\s+[0-9.]+", out, re.M)
    assert main(["plan", "--tier", "cpu"]) == 2


@pytest.fixture(scope="module")
def slurm_dry_run():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "reproduce-all", "--config", "tier=paper",
                          "--profile", "profiles/slurm", "-n", "--nolock"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout + out.stderr


def jobs(text: str) -> list[dict]:
    """(rule, wildcards, resources) of every job in a dry run's listing."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if rule and res:
            out.append({"rule": rule.group(1),
                        "wildcards": dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {},
                        "resources": dict(kv.split("=", 1) for kv in res.group(1).split(", "))})
    return out


def test_slurm_dry_run_gives_lm_jobs_a_gpu_sized_by_the_model(slurm_dry_run, monkeypatch, capsys):
    listed = jobs(slurm_dry_run)
    lm = [j for j in listed if j["rule"] in ("lm_paper_grid", "lm_paper_run")]
    assert lm and all(j["resources"].get("gpu") == "1" for j in lm)
    assert all(int(j["resources"]["runtime"]) > 0 and int(j["resources"]["mem_mb"]) > 0 for j in listed)
    mem = defaultdict(set)
    for j in lm:
        mem[(j["wildcards"]["lm_model"], j["wildcards"]["lm_variant"])].add(int(j["resources"]["gpu_mem_mb"]))
    assert max(mem[("opt-125m", "hiso")]) < min(mem[("opt-2.7b", "hiso")])
    assert all(j["rule"] not in ("lm_paper_grid", "lm_paper_run") for j in listed if "gpu" not in j["resources"])
    # hiso plan counts the same runs
    monkeypatch.chdir(ROOT)
    assert main(["plan", "--tier", "paper"]) == 0
    total = re.search(r"^total\s+(\d+)", capsys.readouterr().out, re.M)
    assert int(total.group(1)) == len(lm)

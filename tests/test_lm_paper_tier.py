"""The paper tier's job list, from `snakemake reproduce-all --config tier=paper -n` (offline):
lr selection then report runs for every (model, task, method), and every run's config valid."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from hiso import config
from hiso.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("snakemake")


@pytest.fixture(scope="module")
def dry_run():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "snakemake", "reproduce-all", "--config", "tier=paper",
                          "-n", "-p", "--nolock", "--cores", "1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = []
    res = paper_cfg()["results"]
    for line in out.stdout.splitlines():
        if " -m hiso run " in line and f"--out {res}/" in line:
            args = shlex.split(line.split(" -m hiso run ", 1)[1])
            sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
            lr_from = [args[i + 1] for i, a in enumerate(args) if a == "--lr-from"]
            runs.append({"config": args[0], "out": args[args.index("--out") + 1], "sets": sets,
                         "lr_from": lr_from})
    return out.stdout, runs


def paper_cfg():
    return yaml.safe_load((ROOT / "configs/pipeline.yaml").read_text())["lm"]["paper"]


def test_every_cell_has_its_lr_selection_then_report_runs(dry_run):
    stdout, runs = dry_run
    cfg = paper_cfg()
    res = cfg["results"]
    cells = {(m, t, v) for g in cfg["grids"].values() for m in g["models"] for t in g["tasks"]
             for v in g["methods"]}
    assert ("opt-125m", "sst2", "mezo") in cells and ("opt-1.3b", "cb", "mezo") in cells
    grid = Counter()
    report = Counter()
    for r in runs:
        parts = Path(r["out"]).relative_to(res).parts
        if parts[2] == "grid":
            assert not r["lr_from"] and any(s.startswith("method.lr=") for s in r["sets"])
            grid[parts[:2] + parts[3:4]] += 1
        else:
            assert parts[2] == "report" and r["lr_from"] == [f"{res}/{'/'.join(parts[:2])}/selected/{parts[3]}.json"]
            report[parts[:2] + parts[3:4]] += 1
    for m, t, v in cells:
        lrs = cfg["methods"][v]["lrs"]
        n_lrs = len(lrs if isinstance(lrs, list) else lrs.get(m, lrs["default"]))
        assert grid[(m, t, v)] == n_lrs * len(cfg["selection_seeds"]), (m, t, v)
        assert report[(m, t, v)] == len(cfg["report_seeds"]), (m, t, v)
    assert set(grid) == set(report) == cells
    # the job counts the dry run prints: the grid's size, selection included
    counts = dict(re.findall(r"^(lm_paper_\w+)\s+(\d+)$", stdout, flags=re.M))
    assert int(counts["lm_paper_grid"]) == sum(grid.values())
    assert int(counts["lm_paper_select"]) == len(cells)
    assert int(counts["lm_paper_select_round"]) == len(cells)  # the first round; more at an edge
    assert int(counts["lm_paper_run"]) == sum(report.values())


def test_every_paper_run_config_is_valid_and_at_the_authors_settings(dry_run):
    _, runs = dry_run
    seen = set()
    # a cell's grid and report runs share one config but for seed, name and lr (what `hiso
    # select` requires of a grid, and what makes the selected lr mean the same at report time)
    varying = ("seed=", "name=", "method.lr=")
    cells = {(r["config"], tuple(s for s in r["sets"] if not s.startswith(varying))) for r in runs}
    c = paper_cfg()
    assert len(cells) == len({(m, t, v) for g in c["grids"].values() for m in g["models"]
                              for t in g["tasks"] for v in g["methods"]})
    for path, sets in cells:
        resolved = config.load(ROOT / path, list(sets))  # a UserError (e.g. n_eval) fails here
        task, method = resolved.task_cfg, resolved.method_cfg
        fed = resolved.run.federation
        key = (task.dataset, resolved.method_cls.name)
        seen.add(key)
        if resolved.method_cls.name != "mezo":
            assert (fed.clients, fed.sampled) == (6, 2)
        if task.dataset == "squad":
            assert task.partition == "iid" and method.weight_decay == 0.0
        else:
            assert (task.partition, task.alpha) == ("dirichlet", 1.0)
            assert method.weight_decay == 5e-4
        if task.dataset == "sst2":
            assert task.max_length == 32 and task.n_eval == 872
        if resolved.method_cls.name == "hiso":
            assert method.h_source == "last_step" and method.nu == 0.95
    assert ("sst2", "mezo") in seen and ("squad", "fedadam") in seen


def test_more_eval_rows_than_the_split_holds_is_refused_at_config_time(tmp_path):
    # GLUE SST-2's validation split has 872 labelled rows: n_eval 1000 stopped every paper-tier
    # SST-2 run after the model download, before training
    base = config.load_yaml(ROOT / "configs/lm/paper.yaml")
    with pytest.raises(UserError, match=r"task.n_eval: 1000 > the 872 labelled rows of sst2's validation"):
        config.resolve(config.apply_overrides(base, ["task.n_eval=1000"]))
    with pytest.raises(UserError, match=r"task.n_train: 200 \+ n_dev 100 > the 250 labelled rows of cb"):
        config.resolve(config.apply_overrides(base, ["task.dataset=cb", "task.n_train=200",
                                                     "task.n_dev=100", "task.n_eval=56"]))
    # local files may hold any number of rows: checked when they are read
    config.resolve(config.apply_overrides(base, ["task.n_eval=1000", f"task.data_dir={tmp_path}"]))


def test_every_published_model_task_method_has_a_paper_grid_cell():
    # the MeZO rows of the DeComFL table had no run before MeZO joined the grid
    from hiso.report import published as paper

    cfg = paper_cfg()
    cells = {(m, t, v) for g in cfg["grids"].values() for m in g["models"] for t in g["tasks"]
             for v in g["methods"]}
    published = paper.load(ROOT / "reference/paper_values.csv")
    wanted = set(zip(published["model"], published["task"], published["method"]))
    assert {w for w in wanted if w[2] == "mezo"}  # the file has MeZO rows
    assert wanted - cells == set()

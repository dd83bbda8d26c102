"""Learning-rate selection on the dev split (hiso/report/selection.py): scores, ties, errors, the CLI."""

import json

import pytest
import yaml

from helpers import config

from hiso.cli import main as cli_main
from hiso.errors import UserError
from hiso.report.selection import run_score, select_lr, selected_lr


def fake_run(lr: float, seed: int, dev: list[float], acc: list[float], name="v", status="ok"):
    cfg = {"name": name, "seed": seed, "method": {"name": "decomfl", "lr": lr}, "task": {"name": "digits"}}
    recs = [{"round": 10 * i, "dev_accuracy": d, "accuracy": a} for i, (d, a) in enumerate(zip(dev, acc))]
    return cfg, {"status": status}, recs


def test_selection_reads_dev_only_averages_last_evaluations_and_breaks_ties_low():
    runs = []
    for seed in (100, 101):
        # lr 0.01: best on eval, worse on dev; lr 0.005: best on dev
        runs.append(fake_run(0.01, seed, [0.1, 0.5, 0.6, 0.6], [0.1, 0.9, 0.95, 0.95]))
        runs.append(fake_run(0.005, seed, [0.1, 0.6, 0.7, 0.8], [0.1, 0.2, 0.2, 0.2]))
        runs.append(fake_run(0.02, seed, [0.1, 0.9, float("nan"), float("nan")], [0.1, 0.9, 0.9, 0.9],
                             status="diverged"))
    sel = select_lr(runs, last=3)
    assert sel["lr"] == 0.005 and sel["score"] == pytest.approx(0.7)
    assert sel["seeds"] == [100, 101] and sel["at_grid_edge"]            # 0.005 is the grid's smallest
    nan_row = [g for g in sel["grid"] if g["lr"] == 0.02][0]
    assert nan_row["score"] == pytest.approx(0.3) and nan_row["statuses"] == ["diverged"]
    tie = select_lr([fake_run(0.01, 1, [0.5], [0]), fake_run(0.003, 1, [0.5], [0]),
                        fake_run(0.001, 1, [0.2], [0])], last=1)
    assert tie["lr"] == 0.003 and not tie["at_grid_edge"]
    with pytest.raises(UserError, match="several variants"):
        select_lr([fake_run(0.01, 1, [0.5], [0]), fake_run(0.003, 1, [0.5], [0], name="w")])
    with pytest.raises(UserError, match="different seeds"):
        select_lr([fake_run(0.01, 1, [0.5], [0]), fake_run(0.003, 2, [0.5], [0])])


def test_last_zero_averages_every_evaluation_so_the_faster_lr_wins():
    # both end at 1.0 on dev; the larger lr gets there sooner
    slow = [0.5, 0.6, 1.0, 1.0, 1.0]
    fast = [0.5, 0.9, 1.0, 1.0, 1.0]
    runs = [fake_run(0.01, 0, slow, slow), fake_run(0.02, 0, fast, fast)]
    assert select_lr(runs, last=3)["lr"] == 0.01          # a tie on the end point: the smaller lr
    sel = select_lr(runs, last=0)
    assert sel["lr"] == 0.02 and sel["score"] == pytest.approx(0.88)
    assert "area under" in sel["criterion"]
    assert run_score([{"dev_accuracy": v} for v in slow], 0) == pytest.approx(0.82)
    with pytest.raises(UserError, match="--last"):
        select_lr(runs, last=-1)


def test_an_f1_task_is_selected_on_dev_f1():
    # SQuAD's runs report f1: they carry dev_f1 and no dev_accuracy
    def f1_run(lr, dev):
        cfg, _, _ = fake_run(lr, 0, [], [])
        return cfg, {"status": "ok", "metric": "f1"}, [{"round": 0, "dev_f1": dev, "f1": 0.0}]

    sel = select_lr([f1_run(0.01, 0.4), f1_run(0.02, 0.6)], last=1)
    assert sel["lr"] == 0.02 and sel["score"] == pytest.approx(0.6) and "dev_f1" in sel["criterion"]
    with pytest.raises(UserError, match="different metrics"):
        select_lr([f1_run(0.01, 0.4), fake_run(0.02, 0, [0.5], [0.5])], last=1)


def test_selected_lr_checks_the_file_and_the_variant(tmp_path):
    good = tmp_path / "sel.json"
    good.write_text(json.dumps({"name": "v", "lr": 0.02, "grid": []}))
    assert selected_lr(good) == 0.02 and selected_lr(good, "v") == 0.02
    with pytest.raises(UserError, match="selects for 'v', not 'w'"):
        selected_lr(good, "w")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="bad.json: not valid JSON"):
        selected_lr(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"rounds": 3}))
    with pytest.raises(UserError, match="not a selection file"):
        selected_lr(other)
    with pytest.raises(UserError, match="missing.json: not found"):
        selected_lr(tmp_path / "missing.json")


def test_run_lr_from_sets_method_lr_and_bad_files_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config()))
    sel = tmp_path / "sel.json"
    sel.write_text(json.dumps({"name": "t", "lr": 0.00125, "grid": []}))
    assert cli_main(["run", str(cfg), "--out", str(tmp_path / "r"), "--set", "method.lr=0.5",
                     "--lr-from", str(sel), "--no-progress"]) == 0
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["method"]["lr"] == 0.00125
    capsys.readouterr()
    assert cli_main(["run", str(cfg), "--out", str(tmp_path / "s"), "--lr-from", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no.json: not found" in err
    assert not (tmp_path / "s").exists()

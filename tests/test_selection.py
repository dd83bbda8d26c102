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


def test_a_run_that_stopped_early_scores_zero_where_it_did_not_reach():
    # lr 0.02 led on dev until it diverged after 2 of 5 evaluations: over the whole curve (last=0)
    # its 3 missing evaluations count 0, so the run that finished wins; padded only when not ok
    runs = [fake_run(0.01, 1, [0.5, 0.6, 0.6, 0.6, 0.6], [0] * 5),
            fake_run(0.02, 1, [0.7, 0.8], [0] * 2, status="diverged")]
    sel = select_lr(runs, last=0)
    assert sel["lr"] == 0.01
    row = [g for g in sel["grid"] if g["lr"] == 0.02][0]
    assert row["score"] == pytest.approx(1.5 / 5)
    assert select_lr(runs, last=2)["grid"][1]["score"] == 0.0                 # its last 2: never reached
    # a finished run with fewer evaluations (another eval.every) is not padded
    ok_short = [runs[0], fake_run(0.02, 1, [0.7, 0.8], [0] * 2)]
    assert select_lr(ok_short, last=0)["lr"] == 0.02


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


# -- a selection at a grid edge grows the grid beyond it ----------------------------------------

def test_beyond_edge_steps_one_log_step_with_the_edge_s_own_ratio():
    from hiso.report.selection import beyond_edge

    assert beyond_edge([0.005, 0.01, 0.02], "high") == 0.04
    assert beyond_edge([0.005, 0.01, 0.02], "low") == 0.0025
    # uneven spacing (digits' FedAvg grid): each edge steps on with its own ratio, 3 digits kept
    assert beyond_edge([0.1, 0.3, 1.0], "high") == 3.33
    assert beyond_edge([0.1, 0.3, 1.0], "low") == 0.0333
    assert beyond_edge([0.0025, 0.0035, 0.005, 0.007, 0.01], "high") == 0.0143
    with pytest.raises(UserError, match="two or more increasing"):
        beyond_edge([0.01], "high")
    with pytest.raises(UserError, match="two or more increasing"):
        beyond_edge([0.02, 0.01], "high")
    with pytest.raises(UserError, match="positive"):
        beyond_edge([0.0, 0.01], "low")


def test_extension_asks_for_one_lr_beyond_the_edge_until_the_cap():
    from hiso.report.selection import extension

    base = [0.005, 0.01, 0.02]
    inside = extension(base, 0.01, base, 2)
    assert inside == {"base_grid": base, "extended": [], "max_extensions": 2, "extend": None,
                      "edge_after_cap": False}
    assert extension(base, 0.02, base, 2)["extend"] == 0.04             # top edge: up
    assert extension(base, 0.005, base, 2)["extend"] == 0.0025          # bottom edge: down
    once = extension(base + [0.04], 0.04, base, 2)
    assert once["extended"] == [0.04] and once["extend"] == 0.08
    # the best moved back inside: done, nothing more asked
    assert extension(base + [0.04], 0.02, base, 2)["extend"] is None
    capped = extension(base + [0.04, 0.08], 0.08, base, 2)
    assert capped["extend"] is None and capped["edge_after_cap"] and capped["extended"] == [0.04, 0.08]
    both = extension([0.0025] + base + [0.04], 0.0025, base, 3)          # grew up, then down
    assert both["extended"] == [0.0025, 0.04] and both["extend"] == 0.00125
    single = extension([0.005], 0.005, [0.005], 2)                     # one lr: no edge to step from
    assert single["extend"] is None and not single["edge_after_cap"]
    zero = extension(base, 0.02, base, 0)                               # cap 0: never extends
    assert zero["extend"] is None and zero["edge_after_cap"]
    with pytest.raises(UserError, match="no runs at the base lrs"):
        extension([0.005, 0.01], 0.01, base, 2)
    with pytest.raises(UserError, match="inside the base grid"):
        extension(base + [0.015], 0.01, base, 2)
    with pytest.raises(UserError, match="max-extensions"):
        extension(base, 0.01, base, -1)


def test_select_cli_writes_the_extension_and_the_table_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = []
    for lr, dev in ((0.005, 0.2), (0.01, 0.4), (0.02, 0.6), (0.04, 0.7)):
        cfg, summary, recs = fake_run(lr, 100, [dev], [0.0])
        d = tmp_path / f"lr{lr:g}"
        d.mkdir()
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "summary.json").write_text(json.dumps({**summary, "metric": "accuracy"}))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(str(d))
    base = ["--base-lrs", "0.005", "0.01", "0.02"]
    assert cli_main(["select", *paths[:3], "--out", "r0.json", "--last", "1", *base]) == 0
    assert json.loads((tmp_path / "r0.json").read_text())["extend"] == 0.04
    assert cli_main(["select", *paths, "--out", "r1.json", "--last", "1", *base,
                     "--max-extensions", "1"]) == 0
    r1 = json.loads((tmp_path / "r1.json").read_text())
    assert r1["lr"] == 0.04 and r1["extend"] is None and r1["edge_after_cap"]
    assert cli_main(["table", "selection", "r1.json", "--out", "s.md", "--csv", "s.csv"]) == 0
    md = (tmp_path / "s.md").read_text()
    assert "| v | 0.04 (added) | 0.7000 * |" in md
    assert "Grids extended: v (+0.04). Still at a grid edge after the cap: v." in md
    assert "added_beyond_edge" in (tmp_path / "s.csv").read_text()
    # without --base-lrs: the selection JSON as before (no extension keys)
    assert cli_main(["select", *paths[:3], "--out", "plain.json", "--last", "1"]) == 0
    assert "extend" not in json.loads((tmp_path / "plain.json").read_text())

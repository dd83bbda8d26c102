"""Published values beside ours (hiso/paper.py, `hiso table convergence --paper`)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hiso.report import published as paper
from hiso.cli import main as cli_main
from hiso.errors import UserError
from hiso.report.convergence import convergence_table

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "paper_values.csv"


def test_the_shipped_reference_file_reads_and_selects_by_model_and_task():
    df = paper.load(REFERENCE)
    rows = paper.published(df, "opt-350m", "squad").set_index(["method", "source"])
    assert rows.loc[("hiso", "hiso_table3"), "value"] == 39.13
    assert rows.loc[("hiso", "hiso_table3"), "comm"] == "20.51 KB"
    assert rows.loc[("hiso", "hiso_table2"), "value"] == 250
    assert rows.loc[("decomfl", "hiso_table2"), "value"] == 1350
    assert (rows["metric"].isin(["f1", "rounds"])).all()
    assert len(paper.published(df, "opt-125m", "nope")) == 0


def _metrics():
    rows = []
    for run, method, accs in (("d0", "decomfl", [0.5, 0.7, 0.80]), ("d1", "decomfl", [0.5, 0.6, 0.82]),
                              ("h0", "hiso", [0.5, 0.81, 0.86]), ("h1", "hiso", [0.5, 0.83, 0.84])):
        for i, a in enumerate(accs):
            rows.append((run, method, 100 * i, a, 40 * i, 120 * i))
    df = pd.DataFrame(rows, columns=["run", "method", "round", "accuracy", "bytes_up", "bytes_down"])
    df["metric"], df["metric_mode"], df["status"], df["task"] = "accuracy", "max", "ok", "lm"
    df["bytes_total"] = df["bytes_up"] + df["bytes_down"]
    return df


def test_beside_puts_our_medians_next_to_the_printed_values():
    table = convergence_table(_metrics(), 1e-2, reference="decomfl")
    rows = paper.published(paper.load(REFERENCE), "opt-350m", "sst2")
    side = paper.beside(table, rows, "accuracy", "decomfl").set_index(["method", "source"])
    acc = side.loc[("hiso", "hiso_table3")]
    assert acc["ours"] == pytest.approx(85.0)        # final: median of 0.86, 0.84
    assert acc["ours_best"] == pytest.approx(85.0)
    assert acc["paper"] == 87.50 and acc["ours_minus_paper"] == pytest.approx(-2.5)
    assert acc["paper_comm"] == "17.33 KB" and acc["ours_bytes_up"] == 80
    rounds = side.loc[("hiso", "hiso_table2")]
    # decomfl's best = median(0.80, 0.82) = 0.81: hiso reaches it at round 100 in both runs
    assert rounds["ours"] == 100 and rounds["paper"] == 275 and rounds["ours_minus_paper"] == -175
    assert side.loc[("decomfl", "hiso_table2"), "paper"] == 550
    # a published method we did not run shows NaN, not a made-up number
    assert np.isnan(side.loc[("fedavg", "hiso_table3"), "ours"])
    assert side.loc[("fedadam", "hiso_table3"), "confidence"] == "secondhand"


def test_cli_table_with_paper_and_its_errors(tmp_path, capsys):
    m = tmp_path / "m.csv"
    _metrics().to_csv(m, index=False)
    out, csv = tmp_path / "t.md", tmp_path / "t.csv"
    base = ["table", "convergence", str(m), "--out", str(out), "--csv", str(csv), "--reference", "decomfl"]
    assert cli_main(base + ["--paper", str(REFERENCE), "--paper-model", "opt-350m", "--paper-task", "sst2"]) == 0
    text = out.read_text()
    assert "## Beside the published values (opt-350m, sst2)" in text and "| 87.5 |" in text
    assert cli_main(base + ["--paper", str(REFERENCE), "--paper-model", "opt-350m", "--paper-task", "wic"]) == 0
    assert "No published values for opt-350m on wic" in out.read_text()
    capsys.readouterr()
    out.unlink(), csv.unlink()
    assert cli_main(base + ["--paper", str(tmp_path / "none.csv"), "--paper-model", "a", "--paper-task", "b"]) == 2
    assert not out.exists() and not csv.exists()  # nothing half-written
    assert "none.csv: published-values CSV not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("source,model\nx,y\n")
    assert cli_main(base + ["--paper", str(bad), "--paper-model", "a", "--paper-task", "b"]) == 2
    assert "bad.csv: missing column(s) task, method, metric, value, comm, confidence" in capsys.readouterr().err
    assert cli_main(base + ["--paper", str(REFERENCE)]) == 2
    assert "--paper needs --paper-model and --paper-task" in capsys.readouterr().err

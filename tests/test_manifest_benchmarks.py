"""The manifest's seconds: each artefact's rule (its benchmark file) and every job's total."""

import json

from hiso.cli import main

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_manifest_folds_in_benchmark_seconds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.md").write_text("| a |\n")
    (tmp_path / "f.png").write_bytes(b"png")
    bench = tmp_path / "results" / "benchmarks"
    bench.mkdir(parents=True)
    (bench / "report.tsv").write_text(HEADER + "12.5\t0:00:12\t100\t1\t1\t1\t0\t0\t80.0\t10.25\n")
    (bench / "run.tsv").write_text(HEADER + "100.0\t0:01:40\t100\t1\t1\t1\t0\t0\t99.0\t98.0\n")
    mapping = {"t.md": "results/benchmarks/report.tsv", "f.png": "results/benchmarks/missing.tsv"}
    assert main(["manifest", "t.md", "f.png", "--tier", "cpu", "--out", "m",
                 "--benchmarks", json.dumps(mapping), "--benchmark-dir", "results"]) == 0
    lines = (tmp_path / "m").read_text().splitlines()
    row = next(line for line in lines if line.endswith("(results/benchmarks/report.tsv)"))
    assert row.split()[1:4] == ["12.50", "10.25", "t.md"]
    missing = next(line for line in lines if "f.png  (" in line)
    assert missing.split()[1:3] == ["nan", "nan"]
    assert lines[-1].endswith("2 jobs, wall 112 s, CPU 108 s")


def test_a_broken_benchmark_file_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.md").write_text("x")
    (tmp_path / "b.tsv").write_text("nonsense\n1\n")
    assert main(["manifest", "t.md", "--out", "m", "--benchmarks", '{"t.md": "b.tsv"}']) == 2
    assert "b.tsv: not a Snakemake benchmark file" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()

"""Tables as Markdown, CSV and LaTeX; footers; cells for runs that diverged or were not run."""

import json
import shutil
from pathlib import Path

import pytest

from golden.runs import REPO, _write_run, build
from hiso.cli import main
from hiso.report import tables


def test_markdown_escapes_pipes_and_newlines_once():
    md = tables.markdown(["a|b", "c"], [["x|y", "1\n2"]])
    assert md.splitlines() == ["| a\\|b | c |", "|---|---|", "| x\\|y | 1 2 |"]


def test_latex_escapes_specials_and_uses_booktabs():
    tex = tables.latex(["lr_x", "50%"], [["a & b", "$1 #2 {3} ~ ^ \\"], ["**PASS**", "<1>"]],
                       caption="rounds_to_0.8")
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"lr\_x & 50\% \\" in tex
    assert (r"a \& b & \$1 \#2 \{3\} \textasciitilde{} \textasciicircum{} \textbackslash{} \\"
            in tex)
    assert r"\textbf{PASS} & \textless{}1\textgreater{} \\" in tex
    assert r"\caption{rounds\_to\_0.8}" in tex


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    commands = build(tmp_path)
    for argv in commands:
        if argv[0] == "aggregate" or argv[0] == "select":
            assert main(argv) == 0
    return tmp_path


def test_every_table_comes_as_md_csv_and_tex_with_a_footer(runs):
    assert main(["table", "convergence", "lm_metrics.csv", "--out", "t.md", "--csv", "t.csv",
                 "--reach", "0.8", "--reference", "decomfl", "--tier", "cpu"]) == 0
    assert main(["table", "selection", "sel_hiso.json", "--out", "s.md", "--csv", "s.csv",
                 "--tier", "cpu"]) == 0
    assert main(["digits", "table", "speedup", "digits_metrics.csv", "--out", "d.md", "--csv",
                 "d.csv", "--tier", "cpu"]) == 0
    from hiso.provenance import git_state

    foot = f"Generated at commit {git_state()}, tier cpu."
    for stem, n_tables in (("t", 1), ("s", 1), ("d", 4)):
        md, tex = (runs / f"{stem}.md").read_text(), (runs / f"{stem}.tex").read_text()
        assert md.rstrip().endswith(f"_{foot}_")
        assert tex.count(r"\begin{tabular}") == n_tables
        assert tex.count(tables.tex_escape(foot)) == n_tables + 1  # a comment and one per table
        assert foot not in (runs / f"{stem}.csv").read_text()  # the CSV stays pure data


def test_published_values_of_methods_not_run_say_so(runs):
    shutil.copy(REPO / "reference" / "paper_values.csv", runs / "pv.csv")
    args = ["table", "convergence", "lm_metrics.csv", "--out", "p.md", "--csv", "p.csv",
            "--reference", "decomfl", "--paper", "pv.csv", "--paper-model", "opt-125m",
            "--paper-task", "sst2", "--tier", "cpu"]
    assert main(args) == 0
    md = (runs / "p.md").read_text()
    fedadam = next(line for line in md.splitlines() if line.startswith("| fedadam "))
    assert fedadam.count("not run (tier cpu)") == 4 and "NaN" not in fedadam
    hiso = next(line for line in md.splitlines() if line.startswith("| hiso | final"))
    assert "not run" not in hiso
    assert r"not run (tier cpu)" in (runs / "p.tex").read_text()


def test_a_diverged_run_is_marked_in_its_cell(runs):
    d = runs / "quadratic" / "hiso" / "seed1"
    summary = json.loads((d / "summary.json").read_text())
    summary["status"] = "diverged"
    recs = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    recs[-1]["rel_gap"] = float("inf")
    _write_run(d, {"name": "hiso-seed1", "seed": 1, "method": {"name": "hiso", "lr": 0.01},
                   "task": {"name": "quadratic"}}, summary, recs)
    quad = sorted(str(p.relative_to(runs)) for p in (runs / "quadratic").glob("*/seed*/summary.json"))
    assert main(["aggregate", *quad, "--out", "q.csv"]) == 0
    assert main(["table", "convergence", "q.csv", "--out", "q.md", "--csv", "q.csv2",
                 "--tier", "cpu"]) == 0
    lines = (runs / "q.md").read_text().splitlines()
    hiso = next(line for line in lines if line.startswith("| hiso "))
    decomfl = next(line for line in lines if line.startswith("| decomfl "))
    assert "(diverged)" in hiso.split("|")[3] and hiso.rstrip(" |").endswith("diverged,ok")
    assert "diverged" not in decomfl

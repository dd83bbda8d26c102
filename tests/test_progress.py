"""Progress lines in the run directory's progress.log: steady interval, rate, ETA, latest metric."""

import re

import yaml

from hiso.cli import main
from hiso.progress import FILE, ProgressLog

from helpers import config


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_lines_come_at_the_interval_with_rate_eta_and_latest_metric(tmp_path):
    clock = Clock()
    log = ProgressLog(tmp_path, total=100, start=0, interval=30.0, clock=clock)
    for n in range(1, 101):
        clock.t += 1.0  # one round per second
        if n == 20:
            log.evaluated("accuracy", 0.8125, 20)
        log.tick(n)
    lines = (tmp_path / FILE).read_text().splitlines()
    assert len(lines) == 3  # at 30 s, 60 s, 90 s
    first = lines[0]
    assert " round 30/100 (30.0%) 1 rounds/s ETA 1m10s latest accuracy 0.8125 (round 20)" in first
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ", first)
    log.tick(100, force=True)
    assert (tmp_path / FILE).read_text().splitlines()[-1].split(" ", 1)[1].startswith(
        "round 100/100 (100.0%)")


def test_a_run_without_progress_bar_writes_its_progress_log(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config(**{"federation.rounds": 6, "eval.every": 2})))
    out = tmp_path / "run"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    last = (out / FILE).read_text().splitlines()[-1]
    assert "round 6/6 (100.0%)" in last and re.search(r"latest f_gap [0-9.e+-]+ \(round 6\)$", last)

"""A progress line in the run directory's ``progress.log`` at a steady interval.

Pipelines run ``hiso run --no-progress`` (no bar), so a long run would show nothing between
evaluations; this file says where the run is: the round, the rate, an ETA and the latest
evaluation. It is written whether or not a bar is shown, every ``HISO_PROGRESS_SECONDS``
(default 30) of wall time and at the end; ``tail -f RUN_DIR/progress.log`` follows a run.
Reading the clock changes no result: nothing here feeds back into the run.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

FILE = "progress.log"


def interval_seconds() -> float:
    raw = os.environ.get("HISO_PROGRESS_SECONDS", "30")
    try:
        value = float(raw)
    except ValueError:
        value = 30.0
    return max(value, 0.0)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def line(round_: int, total: int, rate: float, metric: str | None, value, at_round) -> str:
    """One progress line (UTC time, round, percent, rounds per second, ETA, latest metric)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    pct = 100.0 * round_ / total if total else 100.0
    eta = _duration((total - round_) / rate) if rate > 0 else "?"
    latest = (f"{metric} {value:.4g} (round {at_round})"
              if metric is not None and isinstance(value, (int, float)) else "no evaluation yet")
    return (f"{stamp} round {round_}/{total} ({pct:.1f}%) {rate:.3g} rounds/s ETA {eta} "
            f"latest {latest}")


class ProgressLog:
    """Append a line to ``run_dir/progress.log`` (and to ``stream``) every ``interval`` s."""

    def __init__(self, run_dir: Path, total: int, start: int, interval: float | None = None,
                 stream=None, clock=time.monotonic):
        self.path = Path(run_dir) / FILE
        self.total, self.start = total, start
        self.interval = interval_seconds() if interval is None else interval
        self.stream, self.clock = stream, clock
        self.t0 = self.last = clock()
        self.metric = self.value = self.at = None

    def evaluated(self, metric: str, value, round_: int) -> None:
        self.metric, self.value, self.at = metric, value, round_

    def tick(self, round_: int, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        done = round_ - self.start
        rate = done / (now - self.t0) if now > self.t0 else 0.0
        text = line(round_, self.total, rate, self.metric, self.value, self.at)
        with self.path.open("a") as fh:
            fh.write(text + "\n")
        if self.stream is not None:
            print(text, file=self.stream, flush=True)

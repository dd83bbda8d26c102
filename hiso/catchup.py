"""``hiso catchup RUN_DIR``: what a client pays to catch up after k rounds away.

A scalar-only client that last synchronised k rounds ago receives the (seed, averaged scalars)
of the k rounds it missed and replays them with the optimiser's round update (the protocol's
``catch_up``, what faithful mode and Flower clients do). For a finished run this measures, per
k (up to the run's rounds): the downlink's bytes (``ZODownlink`` encoded, as the ledger counts
it) beside the full model a vector method would send, and the seconds the replay takes
(median of ``--repeats``, ``runtime.threads`` of the run). The replay starts from the task's
initial model: the cost of a round update does not depend on the values it is applied to.
Output: one CSV row per k (``hiso largefed report --catchup`` turns it into a table and figure).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from . import io
from .errors import UserError

COLUMNS = ["task", "method", "num_params", "rounds_away", "bytes_down", "model_bytes",
           "replay_seconds", "replay_seconds_per_round", "repeats", "threads"]


def measure(run_dir: str | Path, ks: list[int], repeats: int = 3) -> list[dict]:
    from .export import read_source, resolved_task_and_method
    from .messages import ZODownlink
    from .optimizers.base import ScalarOptimizer
    from .protocol import catch_up, clone, round_seed

    import torch

    src = read_source(run_dir)
    resolved, task, method = resolved_task_and_method(src)
    if src.scalars is None or not isinstance(method, ScalarOptimizer):
        raise UserError(f"{run_dir}: not a scalar-only run (no history to catch up from)")
    run = resolved.run
    R, tau = len(src.scalars), run.federation.local_steps
    P = method.cfg.perturbations
    params0 = task.init_params()
    state0 = method.init_state(params0)
    n = sum(p.numel() for p in params0)
    rows = []
    for k in ks:
        if not 1 <= k <= R:
            print(f"hiso: catchup: {k} rounds away: the run has {R} rounds; skipped", file=sys.stderr)
            continue
        missed = [(round_seed(run.seed, r), src.scalars[r]) for r in range(R - k, R)]
        down = ZODownlink(R, round_seed(run.seed, R), R - k, missed).encode()
        times = []
        for _ in range(repeats):
            params, state = clone(params0), clone(state0)
            t0 = time.perf_counter()
            catch_up(method, params, state, missed, tau, P)
            times.append(time.perf_counter() - t0)
        sec = statistics.median(times)
        rows.append({"task": resolved.task_cls.name,
                     "method": resolved.method_cls.name, "num_params": n, "rounds_away": k,
                     "bytes_down": len(down), "model_bytes": 4 * n, "replay_seconds": sec,
                     "replay_seconds_per_round": sec / k, "repeats": repeats,
                     "threads": torch.get_num_threads()})
    if not rows:
        raise UserError(f"--rounds-away: none of {ks} is within the run's {R} rounds")
    return rows


def add_commands(sub) -> None:
    c = sub.add_parser("catchup", help="bytes and replay seconds for a client k rounds away",
                       description="For a finished scalar-only run: per k rounds away, the bytes "
                                   "of the downlink holding the k missed rounds (beside the float32 "
                                   "model) and the seconds its replay takes; one CSV row per k.")
    c.add_argument("run", help="a finished scalar-only run directory (or a pack)")
    c.add_argument("--rounds-away", type=int, nargs="+", default=[1, 10, 100, 1000],
                   help="k values (default 1 10 100 1000; those beyond the run's rounds are skipped)")
    c.add_argument("--repeats", type=int, default=3)
    c.add_argument("--out", required=True, help="CSV file")
    c.set_defaults(handler=_cmd)


def _cmd(args) -> int:
    if args.repeats < 1:
        raise UserError(f"--repeats: must be >= 1, got {args.repeats}")
    rows = measure(args.run, args.rounds_away, args.repeats)
    lines = [",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]
    io.atomic_write_text(args.out, "\n".join(lines) + "\n")
    for r in rows:
        print(f"{r['rounds_away']:>6} rounds away: {r['bytes_down']:>9} bytes down "
              f"(model {r['model_bytes']}), replay {r['replay_seconds']:.4f} s", file=sys.stderr)
    return 0

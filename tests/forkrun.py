"""`hiso` command lines in forked processes, each optionally killed with SIGKILL at a random point.

A fresh ``python -m hiso`` spends a few CPU seconds importing torch before its first round; on a
shared machine a hundred kills would spend most of their time there. Here a forkserver imports
the package once and forks a process per command line (the same ``hiso.cli.main`` that ``python
-m hiso`` calls, in a process of its own). A kill point is a CPU time: the child arms
``ITIMER_PROF`` and, when it fires, sends itself SIGKILL, which no code of the run can intercept
or clean up after, as a ``kill -9`` from outside. A point drawn in CPU time lands anywhere in the
run (building the task, a round, an evaluation, an atomic write) however busy the machine is,
where a point drawn on the wall clock lands wherever a starved run happens to be.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import time
from pathlib import Path

_CTX = None


def _ctx():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        # imported once in the server, before anything has run a torch kernel (so no thread pool
        # is forked half-initialised)
        _CTX.set_forkserver_preload(["forkrun"])
    return _CTX


def _preload() -> None:
    """Import, in the server, what a run imports lazily (a first run in a fresh process spends
    most of its CPU time importing scipy, pandas and the subcommands' modules): kill points
    drawn over a run's CPU time then land in the run, not in its imports. Nothing here runs a
    torch kernel."""
    import hiso.baselines  # noqa: F401
    import hiso.cli
    import hiso.deploy  # noqa: F401
    import hiso.optimizers  # noqa: F401
    import hiso.runner  # noqa: F401
    import hiso.tasks  # noqa: F401

    hiso.cli._parser()
    for name in ("hiso.tasks.quadratic", "hiso.baselines.fedavg", "hiso.baselines.fedadam",
                 "hiso.baselines.fedzo", "hiso.report.cli", "hiso.experiments.cli", "hiso.digits_cli",
                 "hiso.export", "hiso.budget", "hiso.partition", "scipy", "pandas", "yaml", "tqdm"):
        __import__(name)


def _child(args: list[str], log: str, kill_after_cpu: float | None, cpu_file: str | None) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    if kill_after_cpu is not None:
        signal.signal(signal.SIGPROF, lambda *_: os.kill(os.getpid(), signal.SIGKILL))
        signal.setitimer(signal.ITIMER_PROF, kill_after_cpu)
    from hiso.cli import main

    t = time.process_time()
    try:
        code = main(args)
    except SystemExit as exc:  # argparse
        code = exc.code
    signal.setitimer(signal.ITIMER_PROF, 0)  # finished: not killed while reporting
    if cpu_file:
        Path(cpu_file).write_text(f"{time.process_time() - t}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code if isinstance(code, int) else 1)


def hiso(args: list[str], log: Path, kill_after_cpu: float | None = None,
         cpu_file: Path | None = None, timeout: float = 1800) -> int:
    """Exit status of ``hiso ARGS`` in a forked process (-9: killed), its output appended to
    ``log``; ``kill_after_cpu``: SIGKILL it after that many CPU seconds; ``cpu_file``: where it
    writes the CPU seconds its command took."""
    p = _ctx().Process(target=_child, args=([str(a) for a in args], str(log), kill_after_cpu,
                                           str(cpu_file) if cpu_file else None))
    p.start()
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise TimeoutError(f"hiso {' '.join(map(str, args))}: still running after {timeout} s")
    return p.exitcode


_preload()  # in the forkserver (which imports this module first), and in the caller

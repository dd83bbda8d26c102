"""Theory checks (issue #3): experiments that turn HiSo's theoretical claims into verdicts.

Every experiment drives the engine itself (``hiso.config.resolve`` -> ``hiso.runner.Run``) on the
quadratic task, many runs in one process, each in a normal run directory. A separate report step
reads those run directories back and computes numbers, confidence intervals and PASS/FAIL
verdicts, so every figure and table entry is a function of the run files.

Modules (one job each):

* :mod:`.runs`      run specs, the shared base config, executing a grid, reading run directories;
* :mod:`.stats`     medians with censoring, bootstrap intervals, the verdict rows (:class:`Check`);
* :mod:`.tuning`    the factor-2 step-size search with exact pruning, and its re-derivation;
* :mod:`.dsweep`, :mod:`.zsweep`, :mod:`.illcond`, :mod:`.noise`, :mod:`.local`,
  :mod:`.spectrum`  one experiment each: ``run(cfg, out)`` and ``analyse(cfg, out)``;
* :mod:`.cli` the ``hiso theory`` command; the table and figures are reports
  (:mod:`hiso.report.theory`, :mod:`hiso.report.theory_figures`).

Importing this package is cheap (no torch): ``hiso.cli`` imports it to register commands.
"""

from .cli import add_commands

__all__ = ["add_commands"]

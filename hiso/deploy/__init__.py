"""Running the federation's clients outside this process (``federation.backend``).

``inprocess`` (the default) is :class:`hiso.runner.Run`; ``flower-sim`` and ``flower`` run the
same protocol through Flower (:mod:`hiso.deploy.flower`, the ``flower`` extra). Every backend
writes the same run directory.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def execute(resolved, out: Path, progress: bool = True) -> dict:
    """Run ``resolved`` with its backend; returns the summary written to ``out``."""
    backend = resolved.run.federation.backend
    if backend == "inprocess":
        from ..runner import Run

        return Run(resolved, out, progress).execute()
    try:
        from .flower import apps
    except ImportError as exc:
        raise UserError(f"federation.backend: {backend!r} needs Flower ({exc.name} is missing); "
                        f"install the extra: pip install -e '.[flower]'") from None
    if backend == "flower-sim":
        return apps.simulate(resolved, Path(out), progress)
    return apps.submit(resolved, Path(out), progress)

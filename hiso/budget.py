"""Will a config fit in memory? A lower bound on the bytes a run needs, checked before anything
is built, so that a dimension, client or perturbation count far beyond the machine is refused
with the estimate instead of crashing (or swapping) once the run has started.

The bound counts only what a run certainly holds: the float32 model with its optimiser state
and working copies, the task's per-coordinate data, every faithful-mode client's own copy, the
per-round seed and scalar tables, and the sampler's permutation of the clients. It is refused
only when it exceeds the machine's physical memory, so a run that could fit is never refused.
"""

from __future__ import annotations

import os

from .errors import UserError

GiB = 1 << 30

# float32 copies of the model a scalar-only run holds at least: params, optimiser state,
# a work copy and the perturbation buffer; task data per parameter comes from the task
MODEL_COPIES = 4
# a Python int in a list (the per-round seed table), with its list slot
SEED_BYTES = 40


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(resolved) -> dict[str, int]:
    """Bytes, lower bounds, by the config key that drives them."""
    run = resolved.run
    fed = run.federation
    per_param = getattr(resolved.task_cls, "config_bytes_per_param", 0)
    n = resolved.task_cls.config_params(resolved.task_cfg) if hasattr(resolved.task_cls, "config_params") else None
    terms: dict[str, int] = {}
    if n:
        terms[getattr(resolved.task_cls, "config_size_key", "task")] = n * (4 * MODEL_COPIES + per_param)
        if fed.mode == "faithful" and not getattr(resolved.method_cls, "centralised", False):
            terms["federation.clients (faithful: a model per client)"] = fed.clients * 8 * n
    P = getattr(resolved.method_cfg, "perturbations", None)
    if P:
        terms["method.perturbations x federation.local_steps"] = fed.local_steps * P * (SEED_BYTES + 4 * (fed.sampled + 1))
    if fed.sampled < fed.clients:
        terms["federation.clients"] = 8 * fed.clients  # NumPy draws from a permutation of them
    return terms


def check_fits(resolved, limit: int | None = None) -> None:
    limit = limit if limit is not None else physical_memory()
    if not limit:
        return
    terms = estimate(resolved)
    total = sum(terms.values())
    if total <= limit:
        return
    key = max(terms, key=terms.get)
    raise UserError(f"{key}: too large: the run needs at least {_fmt(total)} of memory "
                    f"({_fmt(terms[key])} for {key}) and this machine has {_fmt(limit)}")


def _fmt(b: int) -> str:
    if b >= 1 << 40:
        return f"{b / (1 << 40):.3g} TiB"
    return f"{b / GiB:.3g} GiB"

"""Small builders shared by the engine tests."""

from __future__ import annotations

import copy

from hiso.config import resolve
from hiso.directions import DirectionSampler
from hiso.protocol import ZOFederation

BASE = {
    "name": "t",
    "seed": 3,
    "task": {"name": "quadratic", "dim": 64, "spectrum": {"kind": "logspaced", "lo": 1.0, "hi": 10.0},
             "heterogeneity": 0.3},
    "method": {"name": "hiso", "lr": 2e-3, "mu": 1e-4, "perturbations": 3},
    "federation": {"clients": 5, "sampled": 2, "local_steps": 2, "rounds": 20},
    "eval": {"every": 5},
}


def config(**overrides) -> dict:
    """BASE with dotted-key overrides, e.g. config(**{"method.name": "decomfl"})."""
    cfg = copy.deepcopy(BASE)
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def federation(cfg: dict) -> ZOFederation:
    r = resolve(cfg)
    task = r.task_cls(r.task_cfg, r.run.federation.clients, r.run.seed)
    opt = r.method_cls(r.method_cfg, DirectionSampler("gaussian"), task)
    return ZOFederation(task, opt, r.run.federation, r.run.seed)

"""Run configuration: YAML in, validated dataclasses out, resolved YAML written with the run.

The resolved config (every default filled in, method- and task-specific keys validated by the
method's and task's own dataclasses) is what identifies a run: a run directory holding another
resolved config is refused rather than mixed.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError
from .schema import SEED_MAX, build, to_dict


@dataclass
class FlowerConfig:
    """Settings of the Flower backends (``hiso.deploy.flower``); ignored in process."""

    #: SuperLink address that `flwr run` submits to (backend ``flower``)
    superlink: str = "127.0.0.1:9093"
    #: seconds the server waits for a round's replies; a client that has not answered by then
    #: is dropped from that round's average
    round_timeout: float = field(default=300.0, metadata={"gt": 0})
    #: seconds the server waits at start for all clients to connect before it begins anyway
    wait_nodes: float = field(default=300.0, metadata={"ge": 0})


@dataclass
class FederationConfig:
    clients: int = field(default=6, metadata={"ge": 1})
    sampled: int = field(default=2, metadata={"ge": 1})
    local_steps: int = field(default=1, metadata={"ge": 1})
    rounds: int = field(default=100, metadata={"ge": 1})
    aggregation: Literal["mean", "weighted"] = "mean"
    mode: Literal["simulation", "faithful"] = "simulation"
    #: stragglers: each sampled client fails to answer a round with this probability (drawn
    #: from the run seed and the round); the round averages the replies it got, and a round
    #: that got none changes nothing. The server's message still goes out (and is counted)
    dropout: float = field(default=0.0, metadata={"ge": 0, "lt": 1})
    #: who runs the clients: this process, Flower's simulation engine, or Flower SuperNodes
    backend: Literal["inprocess", "flower-sim", "flower"] = "inprocess"
    flower: FlowerConfig = field(default_factory=FlowerConfig)

    def check(self, path: str) -> None:
        if self.sampled > self.clients:
            raise UserError(f"{path}.sampled: {self.sampled} sampled clients > {self.clients} clients")
        if self.dropout and self.backend != "inprocess":
            raise UserError(f"{path}.dropout: simulated stragglers need backend inprocess (on "
                            f"Flower, clients that miss flower.round_timeout drop out for real)")


@dataclass
class EvalConfig:
    every: int = field(default=10, metadata={"ge": 1})
    #: stop as diverged when the metric (or train loss) is non-finite or exceeds
    #: divergence_factor times its initial value (min-mode metrics only)
    divergence_factor: float = field(default=1e6, metadata={"gt": 1})
    #: stop early, as a success, once a min-mode metric is <= stop_below x its initial value
    stop_below: float | None = field(default=None, metadata={"gt": 0, "lt": 1})
    #: save the final preconditioner diagonal H (HiSo) as H.npy in the run directory
    save_h: bool = False


@dataclass
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    forward_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    threads: int | None = field(default=None, metadata={"ge": 1})


@dataclass
class RunConfig:
    method: dict
    task: dict
    name: str = "run"
    seed: int = field(default=0, metadata={"ge": 0, "le": SEED_MAX})
    federation: FederationConfig = field(default_factory=FederationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass
class Resolved:
    """A validated run: the top-level config plus the method's and task's own config objects."""

    run: RunConfig
    method_cls: type
    method_cfg: Any
    task_cls: type
    task_cfg: Any

    def to_dict(self) -> dict:
        d = to_dict(self.run)
        d["method"] = {"name": self.method_cls.name, **to_dict(self.method_cfg)}
        d["task"] = {"name": self.task_cls.name, **to_dict(self.task_cfg)}
        return d

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # the base constructor reports unhashable keys itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_yaml(text: str):
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if b"\0" in raw:
        raise UserError(f"{path}: a binary file, not a YAML config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}, line {line}); save it as UTF-8") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None)
        what = f": {problem}" if problem and "duplicate key" in problem else ""
        raise UserError(f"{path}: not valid YAML{where}{what}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item}: expected key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"--set {item}: empty key")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or ""
            if "duplicate key" in problem:
                raise UserError(f"--set {key}: {problem}") from None
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"{key}: {part} is not a mapping")
            node = child
        node[parts[-1]] = value
    return data


def resolve(data: dict) -> Resolved:
    """Validate a raw config dict into a :class:`Resolved` run (raises UserError)."""
    from .baselines import VECTOR_METHODS
    from .optimizers import SCALAR_METHODS
    from .tasks import TASKS

    run = build(RunConfig, data, "")
    methods = {**SCALAR_METHODS, **VECTOR_METHODS}
    mcls, mcfg = _pick(methods, run.method, "method")
    tcls, tcfg = _pick(TASKS, run.task, "task")
    if getattr(mcls, "centralised", False):
        # one client holding all the data
        run.federation.clients = 1
        run.federation.sampled = 1
    resolved = Resolved(run, mcls, mcfg, tcls, tcfg)
    from .budget import check_fits

    check_fits(resolved)
    return resolved


def load(path: str | Path, overrides: list[str] | None = None) -> Resolved:
    data = load_yaml(path)
    merged = apply_overrides(data, overrides or [])
    return resolve(_switched(data, merged, overrides or []))


def _switched(data: dict, merged: dict, overrides: list[str]) -> dict:
    """Drop the file's method (task) keys that a method (task) chosen by ``--set
    method.name=...`` does not have, with a note saying which: switching methods from the
    command line then just works. Keys also given with --set are kept (and validated)."""
    from .baselines import VECTOR_METHODS
    from .optimizers import SCALAR_METHODS
    from .tasks import TASKS

    keys = [o.split("=", 1)[0].strip() for o in overrides if "=" in o]
    for section, registry in (("method", {**SCALAR_METHODS, **VECTOR_METHODS}), ("task", TASKS)):
        old, new = data.get(section), merged.get(section)
        if f"{section}.name" not in keys or not isinstance(old, dict) or not isinstance(new, dict):
            continue
        name = new.get("name")
        if name == old.get("name") or name not in registry:
            continue
        known = {f.name for f in dataclasses.fields(registry[name].Config)}
        given = {k.split(".")[1] for k in keys if k.startswith(f"{section}.") and k.count(".") >= 1}
        drop = [k for k in new if k != "name" and k not in known and k not in given]
        if drop:
            for k in drop:
                del new[k]
            print(f"hiso: note: {section}.name={name}: ignoring the config's {section} keys "
                  f"{name} does not have: {', '.join(map(str, drop))}", file=sys.stderr)
    return merged


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)


def _pick(registry: dict, section: dict, key: str):
    """(class, validated Config) of the ``key`` section's ``name`` in ``registry``."""
    data = dict(section)
    name = data.pop("name", None)
    if name not in registry:
        raise UserError(f"{key}.name: unknown {key} {name!r} (known: {', '.join(sorted(registry))})")
    cls = registry[name]
    return cls, build(cls.Config, data, key)

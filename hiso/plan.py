"""Cost before compute: ``hiso plan --tier paper`` prints, per grid of the paper tier, how many
runs it holds and an ESTIMATE of their GPU-hours, before anything runs.

Per run: forwards = rounds x sampled clients x local steps x (P + 1) for the federated ZO methods
(one batch each: the unperturbed and P perturbed forwards), rounds x (P + 1) for MeZO
(centralised, one batch per round), rounds x sampled x local steps x 3 for the first-order
methods (a backward pass costs about two forwards), plus the evaluations (dev and eval rows
every ``eval.every`` rounds). GPU seconds = forwards x the model's forward cost stated in
``configs/pipeline.yaml`` (``lm.paper.cost``: seconds per forward of one batch of 16 x 32 tokens),
scaled by the task's batch size x input length. It is an estimate: the stated costs are not
measurements of your GPU, attention's quadratic term and generation (SQuAD) are ignored.

Also the per-job resources of the pipeline (``gpu_memory_mb``), from the same stated numbers.
Nothing here imports torch or reads the hub.
"""

from __future__ import annotations

import math

import yaml

from .errors import UserError

FIRST_ORDER = ("fedavg", "fedadam")
REF_TOKENS = 16 * 32  # the batch the stated forward costs are for
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _set(cfg: dict, assignment: str) -> None:
    key, _, raw = assignment.partition("=")
    node = cfg
    *path, last = key.split(".")
    for p in path:
        node = node.setdefault(p, {})
    node[last] = yaml.safe_load(raw)


def resolve(base: dict, overrides: list[str]) -> dict:
    """``base`` with ``key=value`` overrides applied (as ``hiso run --set`` does)."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    for o in overrides:
        _set(cfg, o)
    return cfg


def forwards(cfg: dict) -> int:
    """Forward passes of one run (training and evaluation)."""
    fed, m, task = cfg["federation"], cfg["method"], cfg["task"]
    rounds, sampled, tau = int(fed["rounds"]), int(fed["sampled"]), int(fed.get("local_steps", 1))
    p = int(m.get("perturbations", 1))
    name = m["name"]
    if name in FIRST_ORDER:
        train = rounds * sampled * tau * 3
    elif name == "mezo":
        train = rounds * (p + 1)
    else:
        train = rounds * sampled * tau * (p + 1)
    every = int(cfg.get("eval", {}).get("every", 50))
    evals = rounds // every + 1
    rows = int(task.get("n_eval", 1000)) + int(task.get("n_dev", 500))
    eval_batches = math.ceil(rows / int(task.get("eval_batch_size", 32)))
    # an eval batch is eval_batch_size rows: in units of training batches
    scale = int(task.get("eval_batch_size", 32)) / int(task.get("batch_size", 16))
    return int(train + evals * eval_batches * scale)


def gpu_seconds(cfg: dict, forward_seconds: float) -> float:
    task = cfg["task"]
    tokens = int(task.get("batch_size", 16)) * int(task.get("max_length", 256))
    return forwards(cfg) * forward_seconds * tokens / REF_TOKENS


def gpu_memory_mb(params: float, dtype: str = "float32", method: str = "hiso") -> int:
    """GPU memory to ask for, from the parameter count and the weights' dtype (an estimate).

    ZO methods hold fp32 master weights, the round-start copy and HiSo's H (3 x params x 4
    bytes) plus the forward's weights in ``dtype``; first-order methods add gradients and two
    Adam moments (6 x params x 4 bytes). 4 GiB on top for activations and the CUDA context.
    """
    if dtype not in DTYPE_BYTES:
        raise UserError(f"runtime.forward_dtype {dtype!r}: not one of {', '.join(DTYPE_BYTES)}")
    copies = 6 if method in FIRST_ORDER else 3
    cast = DTYPE_BYTES[dtype] if dtype != "float32" else 0
    return int(math.ceil((params * (4 * copies + cast) / 2**20 + 4096) / 1024) * 1024)


def paper_grid(pipeline: dict, base: dict) -> list[dict]:
    """One row per (grid, model, task, method): runs and estimated GPU-hours."""
    lm = pipeline["lm"]["paper"]
    cost = lm.get("cost")
    if not cost or "forward_seconds" not in cost:
        raise UserError("configs/pipeline.yaml: lm.paper.cost.forward_seconds missing "
                        "(the per-model forward cost the estimate needs)")
    rows = []
    for grid, spec in lm["grids"].items():
        for model in spec["models"]:
            if model not in cost["forward_seconds"]:
                raise UserError(f"lm.paper.cost.forward_seconds: no cost for model {model!r}")
            for task in spec["tasks"]:
                for method in spec["methods"]:
                    mspec = lm["methods"][method]
                    lrs = mspec["lrs"]
                    if isinstance(lrs, dict):
                        lrs = lrs.get(model, lrs["default"])
                    runs = len(lrs) * len(lm["selection_seeds"]) + len(lm["report_seeds"])
                    cfg = resolve(base, [f"method={yaml.safe_dump(mspec['method'], default_flow_style=True).strip()}",
                                         *mspec.get("set", []), *lm["tasks"][task]])
                    per_run = gpu_seconds(cfg, float(cost["forward_seconds"][model]))
                    rows.append({"grid": grid, "model": model, "task": task, "method": method,
                                 "runs": runs, "forwards_per_run": forwards(cfg),
                                 "gpu_hours": runs * per_run / 3600})
    return rows


def cmd_plan(args) -> int:
    from .config import load_yaml

    if args.tier != "paper":
        raise UserError(f"--tier {args.tier}: only the paper tier is planned (the CPU tiers run "
                        f"in minutes to an hour; README)")
    pipeline = load_yaml(args.pipeline)
    base = load_yaml(pipeline["lm"]["paper"]["config"])
    rows = paper_grid(pipeline, base)
    print("ESTIMATE (not a measurement): GPU-hours = runs x forwards per run x the per-model "
          "forward cost stated in lm.paper.cost of " + args.pipeline)
    print(f"{'grid':<16}{'runs':>7}{'GPU-hours':>12}  models x tasks x methods")
    total_runs = total_h = 0.0
    for grid in dict.fromkeys(r["grid"] for r in rows):
        g = [r for r in rows if r["grid"] == grid]
        n, h = sum(r["runs"] for r in g), sum(r["gpu_hours"] for r in g)
        shape = (f"{len({r['model'] for r in g})} x {len({r['task'] for r in g})} x "
                 f"{len({r['method'] for r in g})}")
        print(f"{grid:<16}{n:>7}{h:>12.1f}  {shape}")
        total_runs += n
        total_h += h
    print(f"{'total':<16}{int(total_runs):>7}{total_h:>12.1f}")
    if args.detail:
        print()
        print(f"{'grid':<16}{'model':<14}{'task':<9}{'method':<9}{'runs':>5}{'forwards/run':>14}"
              f"{'GPU-h':>9}")
        for r in rows:
            print(f"{r['grid']:<16}{r['model']:<14}{r['task']:<9}{r['method']:<9}{r['runs']:>5}"
                  f"{r['forwards_per_run']:>14}{r['gpu_hours']:>9.2f}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("plan", help="runs and estimated GPU-hours of the paper tier, per grid")
    p.add_argument("--tier", default="paper")
    p.add_argument("--pipeline", default="configs/pipeline.yaml")
    p.add_argument("--detail", action="store_true", help="one line per (model, task, method)")
    p.set_defaults(handler=cmd_plan)

"""``hiso digits run``: several seeds of one digits variant in one process.

``run CONFIG --out 'DIR/seed{seed}' --seeds S ... --name NAME [--lr X | --lr-from SEL.json]``
    several seeds of one variant in one process (normal run directories; start-up is paid once).
    ``--lr-variant V`` takes the lr that SEL.json selected for variant V (the nu ablation runs
    at HiSo's selected lr).

The digits tables and figures (``hiso digits table|figure``) are reports:
:mod:`hiso.report.digits`.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .report.selection import selected_lr


def add_commands(sub) -> None:
    d = sub.add_parser("digits", help="the digits check: batch runs, figures, tables")
    dsub = d.add_subparsers(dest="digits_command", required=True)

    r = dsub.add_parser("run", help="run several seeds of one variant in one process")
    r.add_argument("config")
    r.add_argument("--out", required=True, help="run directory pattern containing {seed}")
    r.add_argument("--seeds", type=int, nargs="+", required=True)
    r.add_argument("--name", required=True, help="the variant's name (config key `name`)")
    lr = r.add_mutually_exclusive_group()
    lr.add_argument("--lr", type=float, help="method.lr")
    lr.add_argument("--lr-from", help="a selection JSON written by `hiso select`")
    r.add_argument("--lr-variant", help="the variant --lr-from selected for (default: --name); "
                                        "e.g. an ablation run at another variant's selected lr")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    r.set_defaults(handler=cmd_run)

    from .report.cli import add_digits_commands

    add_digits_commands(dsub)


def cmd_run(args) -> int:
    from .config import load
    from .runner import Run

    if "{seed}" not in args.out:
        raise UserError(f"--out {args.out}: must contain {{seed}}")
    extra = [f"name={args.name}"]
    if args.lr_from:
        extra.append(f"method.lr={selected_lr(args.lr_from, args.lr_variant or args.name)!r}")
    elif args.lr is not None:
        extra.append(f"method.lr={args.lr!r}")
    runs = [(load(args.config, args.overrides + extra + [f"seed={s}"]), Path(args.out.format(seed=s)))
            for s in args.seeds]  # every config is validated before anything runs
    status = 0
    for resolved, out in runs:
        summary = Run(resolved, out, progress=False).execute()
        print(f"{out}: {summary['status']} after {summary['rounds']} rounds, "
              f"{summary['metric']} = {summary['final_metric']}", flush=True)
        status |= summary["status"] not in ("ok", "diverged")
    return int(status)

"""``hiso theory``: run a theory experiment, or build the theory table and figures.

``hiso theory run EXPERIMENT --config configs/theory.yaml --out DIR [--part P]``
    every run of one experiment (``dsweep``, ``zsweep``, ``illcond`` (one ``--part``), ``noise``,
    ``local``), in this process, each in a normal run directory under DIR; DIR/index.json last.
``hiso theory report --config configs/theory.yaml --results results/theory --md T.md --csv T.csv
    --figures DIR``
    the verdict table (Markdown + CSV) and the figures ``DIR/theory_*.png``, from the run files.
``hiso theory block-report --config configs/theory.yaml --results results/theory/blocks --md T.md
    --csv T.csv --figure F.png``
    the block-quadratic experiment's own table and figure (issue #15), from its runs alone.
"""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = ("dsweep", "zsweep", "illcond", "noise", "local", "blocks")


def add_commands(sub) -> None:
    t = sub.add_parser("theory", help="theory checks: run an experiment, or build the verdict table")
    tsub = t.add_subparsers(dest="theory_command", required=True)

    r = tsub.add_parser("run", help="run one theory experiment (all its runs, in-process)")
    r.add_argument("experiment", choices=EXPERIMENTS)
    r.add_argument("--config", required=True, help="configs/theory.yaml")
    r.add_argument("--out", required=True, help="output directory of the experiment")
    r.add_argument("--part", help="illcond: which part (configs/theory.yaml illcond.parts)")
    r.set_defaults(handler=cmd_run)

    p = tsub.add_parser("report", help="verdict table and figures from the experiments' runs")
    p.add_argument("--config", required=True)
    p.add_argument("--results", required=True, help="directory holding one directory per experiment")
    p.add_argument("--md", required=True, help="Markdown table")
    p.add_argument("--csv", required=True, help="CSV table")
    p.add_argument("--figures", required=True, help="directory for figures/theory_*.png")
    p.set_defaults(handler=cmd_report)

    b = tsub.add_parser("block-report", help="the block-quadratic experiment's table and figure")
    b.add_argument("--config", required=True)
    b.add_argument("--results", required=True, help="the blocks experiment's directory")
    b.add_argument("--md", required=True)
    b.add_argument("--csv", required=True)
    b.add_argument("--figure", required=True)
    b.set_defaults(handler=cmd_block_report)


def load_config(path: str) -> dict:
    from ..config import load_yaml
    from ..errors import UserError

    cfg = load_yaml(path)
    for key in ("common", "checks"):
        if key not in cfg:
            raise UserError(f"{path}: missing section {key!r}")
    return cfg


def cmd_run(args) -> int:
    from ..errors import UserError

    cfg = load_config(args.config)
    out = Path(args.out)
    if args.experiment not in cfg:
        raise UserError(f"{args.config}: no section {args.experiment!r}")
    exp_cfg, common = cfg[args.experiment], cfg["common"]
    if args.experiment == "illcond":
        from . import illcond

        if args.part not in exp_cfg["parts"]:
            raise UserError(f"--part: {args.part!r} is not one of {', '.join(exp_cfg['parts'])}")
        illcond.run(exp_cfg, common, out, args.part)
        return 0
    import importlib

    module = importlib.import_module(f"{__package__}.{args.experiment}")
    module.run(exp_cfg, common, out)
    return 0


def cmd_report(args) -> int:
    from ..report import theory

    theory.build(load_config(args.config), Path(args.results), Path(args.md), Path(args.csv),
                 Path(args.figures))
    return 0


def cmd_block_report(args) -> int:
    from ..errors import UserError
    from ..report.theory import write_blocks_table

    cfg = load_config(args.config)
    if "blocks" not in cfg:
        raise UserError(f"{args.config}: no section 'blocks'")
    write_blocks_table(cfg["blocks"], cfg["common"], Path(args.results), cfg["checks"],
                       Path(args.md), Path(args.csv), Path(args.figure))
    return 0

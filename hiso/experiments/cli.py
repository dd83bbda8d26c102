"""``hiso theory``: run a theory experiment, or build the theory table and figures.

``hiso theory run EXPERIMENT --config configs/theory.yaml --out DIR [--part P]``
    every run of one experiment (``dsweep``, ``zsweep``, ``illcond`` (one ``--part``), ``noise``,
    ``local``, ``blocks``, ``blocks_scale``), in this process, each in a normal run directory under DIR; DIR/index.json last.
``hiso theory report --config configs/theory.yaml --results results/theory --md T.md --csv T.csv
    --figures DIR``
    the verdict table (Markdown + CSV) and the figures ``DIR/theory_*.png``, from the run files.
``hiso theory block-report --config configs/theory.yaml [--results results/theory/blocks]
    [--scale results/theory/blocks_scale] [--compare TASK METRICS_CSV BASELINE]... --md T.md
    --csv T.csv --figure F.png``
    issue #15's table (.md, .csv, .tex) and figure: the block experiment in the engine, its
    reduced simulation at large d, and hiso_block against BASELINE (and every other variant of
    METRICS_CSV) on real tasks, per round and per forward pass; from the runs alone.
"""

from __future__ import annotations

from pathlib import Path

EXPERIMENTS = ("dsweep", "zsweep", "illcond", "noise", "local", "blocks", "blocks_scale")


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
    p.add_argument("--tier", default=None, help="the pipeline tier, named in the table's footer")
    p.set_defaults(handler=cmd_report)

    b = tsub.add_parser("block-report", help="issue #15's table and figure (hiso_block)")
    b.add_argument("--config", required=True)
    b.add_argument("--results", help="the blocks experiment's directory (engine runs)")
    b.add_argument("--scale", help="the blocks_scale experiment's directory (reduced simulation)")
    b.add_argument("--compare", nargs=3, action="append", default=[], metavar=("TASK", "METRICS", "BASELINE"),
                   help="a real task: `hiso aggregate` metrics.csv of its report runs, the variant "
                        "hiso_block is judged against (repeatable)")
    b.add_argument("--md", required=True)
    b.add_argument("--csv", required=True)
    b.add_argument("--figure", help="rounds against d (engine runs, else the reduced ones); needs "
                                     "--results or --scale")
    b.add_argument("--tier", default=None, help="the pipeline tier, named in the table's footer")
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
                 Path(args.figures), args.tier)
    return 0


def cmd_block_report(args) -> int:
    from ..errors import UserError
    from ..report.theory import write_blocks_table

    cfg = load_config(args.config)
    if not (args.results or args.scale or args.compare):
        raise UserError("block-report: give --results, --scale or --compare")
    for key, given in (("blocks", args.results), ("blocks_scale", args.scale)):
        if given and key not in cfg:
            raise UserError(f"{args.config}: no section {key!r}")
    if args.figure and not (args.results or args.scale):
        raise UserError("block-report: --figure draws rounds against d: give --results or --scale")
    for task, path, _ in args.compare:
        if not Path(path).is_file():
            raise UserError(f"--compare {task}: {path} does not exist")
    write_blocks_table(cfg.get("blocks", {}), cfg["common"], Path(args.results) if args.results else None,
                       cfg["checks"], Path(args.md), Path(args.csv), Path(args.figure) if args.figure else None,
                       scale=(cfg["blocks_scale"], Path(args.scale)) if args.scale else None,
                       compare=[(t, Path(p), b) for t, p, b in args.compare], tier=args.tier)
    return 0

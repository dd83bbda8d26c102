"""Command line: ``hiso run CONFIG.yaml --out DIR [--set key=value ...]``.

Exit status: 0 done (including a run that diverged: that is a result), 1 failed (recorded in the
run directory as status 'failed' when it got that far; ``--failed-ok`` exits 0 then), 2 bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hiso", description="Scalar-only federated zeroth-order optimisation.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run one experiment from a YAML config",
                       description="Run one experiment. Re-running on the same --out resumes a killed "
                                   "run, does nothing for a finished one, and refuses another config.")
    r.add_argument("config", help="YAML config file")
    r.add_argument("--out", required=True, help="run directory")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (dotted path, value parsed as YAML); repeatable")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.add_argument("--lr-from", metavar="SEL.json",
                   help="set method.lr to the lr a `hiso select` file chose (after --set)")
    r.add_argument("--failed-ok", action="store_true",
                   help="exit 0 when the run fails but its failure is recorded in the run "
                        "directory (summary.json status 'failed'), as for a diverged run: a "
                        "pipeline then goes on and its tables mark the run")

    c = sub.add_parser("check", help="validate a config and print it resolved")
    c.add_argument("config")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    from . import report

    report.add_commands(sub)  # aggregate, figure, table, select, manifest, figure-diagnostics
    from . import digits_cli; digits_cli.add_commands(sub)  # noqa: E702 (hiso digits ...)
    from . import plan; plan.add_commands(sub)  # noqa: E702 (hiso plan: the paper tier's cost)
    from . import experiments; experiments.add_commands(sub)  # noqa: E702 (hiso theory ...)
    from .deploy.flower import local; local.add_commands(sub)  # noqa: E702 (hiso flower ...)
    from . import export; export.add_commands(sub)  # noqa: E702 (hiso export, hiso pack)
    from . import catchup; catchup.add_commands(sub)  # noqa: E702 (hiso catchup)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"hiso: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hiso: interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from . import config

    if args.command == "check":
        resolved = config.load(args.config, args.overrides)
        print(config.dump_yaml(resolved.to_dict()), end="")
        return 0
    if args.command == "run":
        from .deploy import execute

        if not args.out.strip():
            raise UserError("--out: give a run directory (an empty path would be the current directory)")
        overrides = list(args.overrides)
        if args.lr_from:
            from .report.selection import selected_lr

            overrides.append(f"method.lr={selected_lr(args.lr_from)!r}")
        resolved = config.load(args.config, overrides)
        try:
            summary = execute(resolved, Path(args.out), progress=not args.no_progress)
        except (UserError, KeyboardInterrupt):
            raise
        except OSError as exc:
            # the disk filled up, a file became unwritable...: the run directory is resumable
            where = f" ({exc.filename})" if exc.filename else ""
            print(f"hiso: error: {args.out}: {exc.strerror or exc}{where}; fix that and rerun the "
                  f"same command to resume", file=sys.stderr)
            return 1
        except Exception as exc:
            if not _recorded_failure(Path(args.out)):
                raise  # no run directory to point at: the traceback is all there is
            msg = " ".join(str(exc).split())
            print(f"hiso: failed: {args.out}: {type(exc).__name__}: {msg} (status 'failed' and "
                  f"the traceback in {Path(args.out) / 'summary.json'}; rerun to retry)",
                  file=sys.stderr)
            return 0 if args.failed_ok else 1
        print(f"{args.out}: {summary['status']} after {summary['rounds']} rounds, "
              f"{summary['metric']} = {summary['final_metric']}", file=sys.stderr)
        return 0 if summary["status"] in ("ok", "diverged") else 1
    return args.handler(args)


def _recorded_failure(out: Path) -> bool:
    from . import io

    try:
        return io.load_json(out / "summary.json").get("status") == "failed"
    except (OSError, UserError):
        return False


if __name__ == "__main__":
    sys.exit(main())

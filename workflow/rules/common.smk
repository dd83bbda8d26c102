# Shared helpers for the rule files. Rules call the package's command line only.
import shlex
import sys

HISO = f"{shlex.quote(sys.executable)} -m hiso"
TIER = config.get("tier", "cpu")
ALL_OUTPUTS = []  # each rule file appends the figures and tables it regenerates
BENCHMARKS = {}  # artefact -> the benchmark file of the rule that wrote it (the manifest's seconds)


def publish(rule, **wildcards):
    """A report rule's outputs, for ALL_OUTPUTS, each recorded with the rule's benchmark file."""
    outs = [str(o).format(**wildcards) for o in rule.output]
    bench = str(rule.benchmark).format(**wildcards) if rule.benchmark else None
    for o in outs:
        if bench:
            BENCHMARKS[o] = bench
    return outs


def sets(overrides):
    """--set flags for a list of key=value strings."""
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)


def in_report(path, part, caption, kind, sub=None):
    """An output shown in `snakemake reproduce-all --report report.html`: grouped by part
    (Engine, Theory, Real data, LM), captioned by workflow/report/<caption>.rst."""
    return report(path, caption=f"../report/{caption}.rst", category=part, subcategory=sub,
                  labels={"kind": kind, "file": os.path.basename(path)})

# Shared helpers for the rule files. Rules call the package's command line only.
import shlex
import sys

HISO = f"{shlex.quote(sys.executable)} -m hiso"
TIER = config.get("tier", "cpu")
ALL_OUTPUTS = []  # each rule file appends the figures and tables it regenerates


def sets(overrides):
    """--set flags for a list of key=value strings."""
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)


def in_report(path, part, caption, kind, sub=None):
    """An output shown in `snakemake reproduce-all --report report.html`: grouped by part
    (Engine, Theory, Real data, LM), captioned by workflow/report/<caption>.rst."""
    return report(path, caption=f"../report/{caption}.rst", category=part, subcategory=sub,
                  labels={"kind": kind, "file": os.path.basename(path)})

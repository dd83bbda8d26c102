# Shared helpers for the rule files. Rules call the package's command line only.
import shlex
import sys

HISO = f"{shlex.quote(sys.executable)} -m hiso"
TIER = config.get("tier", "cpu")
ALL_OUTPUTS = []  # each rule file appends the figures and tables it regenerates


def sets(overrides):
    """--set flags for a list of key=value strings."""
    return " ".join(f"--set {shlex.quote(o)}" for o in overrides)

# Shared helpers for the rule files. Rules call the package's command line only.
import json
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


# -- lr grids that grow beyond an edge (dev-split selection) ----------------------------------
# A selection runs in rounds, each a checkpoint `*_select_round` that writes
# .../select/{variant}/round{sel_round}.json with `hiso select --base-lrs ... --max-extensions K`:
# when the best lr sits at an edge of the grid, its `extend` names one lr a log-step beyond that
# edge (the decision is the package's), the next round runs it on the selection seeds and selects
# again, until a round asks for nothing (the best lr is inside, or K lrs were added). The final
# `selected/{variant}.json` is the selection over the whole grown grid.
wildcard_constraints:
    sel_round="[0-9]+",


def grid_lrs(ckpt, base, rounds=None, **wildcards):
    """The lr strings of a growing grid: ``base``, then the lr each of its first ``rounds``
    selection rounds (checkpoint ``ckpt``) asked for; ``rounds=None``: every round until one asks
    for none (the final grid). Reading a round that has not run yet raises Snakemake's
    IncompleteCheckpointException: the job then waits for that round."""
    lrs, r = list(base), 0
    while rounds is None or r < rounds:
        with open(ckpt.get(sel_round=r, **wildcards).output[0]) as fh:
            nxt = json.load(fh).get("extend")
        if nxt is None:
            break
        lrs.append(f"{float(nxt):g}")
        r += 1
    return lrs


def select_args(base, last, cap):
    """`hiso select` flags of a growing grid (the config's grid, the cap)."""
    return f"--last {last} --base-lrs {' '.join(base)} --max-extensions {cap}"

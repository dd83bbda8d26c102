"""Language-model tasks: declarative templates, data loading, metrics and candidate scoring.

Modules, one job each:
``templates`` (Sample, TextTaskSpec, TASKS, get_task), ``synthetic`` (a generated learnable
task), ``data`` (load_examples, make_splits, load_splits), ``metrics`` (accuracy, SQuAD F1/EM),
``scoring`` (candidate log-likelihoods, losses, greedy decoding) and ``fixtures`` (offline test
assets). Import the submodules directly; this package imports nothing heavy on its own.
"""

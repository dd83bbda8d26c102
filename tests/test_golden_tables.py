"""The reporting code writes the same bytes as the code it replaced.

``tests/golden/expected/`` holds the outputs of every table command (aggregate, convergence,
selection, digits speed-up, the theory writers) on synthetic run directories, written by the
reporting code before it moved into ``hiso/report/`` (``python tests/golden/runs.py
--regenerate`` at commit "golden fixtures"). Any change to a number, a digit of formatting or a
column fails here.
"""

import pytest

from golden.runs import EXPECTED, OUTPUTS, produce


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    produce(root)
    return root


@pytest.mark.parametrize("name", OUTPUTS)
def test_output_is_byte_identical_to_the_golden_file(produced, name):
    assert (produced / name).read_bytes() == (EXPECTED / name).read_bytes(), name

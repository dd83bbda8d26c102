"""benchmarks/gpu_ready.py's code path, exercised on the CPU with tiny shapes (bf16 forwards, fp32
masters, directions drawn by the run's device sampler, replay): the GPU run uses the same code."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpu_ready():
    spec = importlib.util.spec_from_file_location("gpu_ready", ROOT / "benchmarks" / "gpu_ready.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_mode_runs_every_shape_and_passes_its_checks(gpu_ready, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = gpu_ready.main(["--device", "cpu", "--tiny", "--batch", "4", "--seq", "12", "--rounds", "2",
                           "--repeats", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    res = json.loads(out.read_text())["results"]
    assert [r["shape"] for r in res] == ["smollm2-135m", "opt-1.3b", "opt-2.7b"]
    assert [r["architecture"] for r in res] == ["LlamaForCausalLM", "OPTForCausalLM", "OPTForCausalLM"]
    for r in res:
        assert r["dtype"] == "bfloat16" and r["ok"]
        assert r["checks"]["replay bit-identical to the server"] and r["checks"]["H moved from ones"]
        assert all(x > 0 for x in r["time_ratios"]) and len(r["round_s"]) == 2
    assert printed.count("checks: all passed") == 3


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_is_one_line_and_status_2(gpu_ready, capsys):
    assert gpu_ready.main([]) == 2
    captured = capsys.readouterr()
    assert "no CUDA device" in captured.err and not captured.out

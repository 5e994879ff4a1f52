import json

import pytest
from typer.testing import CliRunner

from charlstm.bench import bench_training_step
from charlstm_cli.main import app


def test_bench_reports_every_backend_and_ratios():
    result = bench_training_step(shapes=[(4, 8, 3)], rounds=2, steps_per_round=2, warmup=1)
    backends = {t["backend"] for t in result["timings"]}
    assert backends == {"fused", "fused_step", "reference", "torch"}
    assert all(t["min_ms"] <= t["median_ms"] and (t["rounds"], t["steps_per_round"]) == (2, 2)
               for t in result["timings"])
    (ratio,) = result["ratios"]
    med = {t["backend"]: t["median_ms"] for t in result["timings"]}
    assert ratio["fused_vs_torch"] == pytest.approx(med["torch"] / med["fused"])
    assert ratio["fused_step_vs_torch"] == pytest.approx(med["torch"] / med["fused_step"])


def test_fused_step_backend_trains_the_same_weights_as_the_fused_loop():
    """The fused_step row times the same work: started alike, it moves the LSTM weights as the
    autograd loop does (up to the clipping formula, tf's against torch's norm + 1e-6)."""
    import torch

    from charlstm.bench import _Step

    loop, step = _Step("fused", 4, 8, 3, "cpu", 0), _Step("fused_step", 4, 8, 3, "cpu", 0)
    with torch.no_grad():
        step.w_out.copy_(loop.out.weight.t())
        step.b_out.copy_(loop.out.bias)
    for _ in range(3):
        torch.testing.assert_close(step(), loop(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step.lstm.weight_hh_l0, loop.lstm.weight_hh_l0, atol=1e-5, rtol=1e-5)


def test_bench_cli_json_and_file(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--shapes", "2x4x2", "--backends", "fused,torch", "--rounds", "1",
                                      "--steps-per-round", "1", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads(out.read_text())
    assert {t["backend"] for t in printed["timings"]} == {"fused", "torch"}


@pytest.mark.parametrize("args,message", [
    (["--shapes", "64x64"], "is not BATCHxHIDDENxUNROLLINGS"),
    (["--shapes", "0x4x2"], "must be at least 1"),
    (["--backends", "cudnn"], "unknown backend"),
    (["--device", "tpu"], "is not a device"),
    (["--rounds", "0"], "--rounds and --steps-per-round must be at least 1"),
])
def test_bench_bad_options(args, message):
    result = CliRunner().invoke(app, ["bench", "--shapes", "2x4x2", "--rounds", "1",
                                      "--steps-per-round", "1", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and message in result.stderr


def test_bench_table_shows_each_backend_and_the_ratios():
    result = CliRunner().invoke(app, ["bench", "--shapes", "2x4x2", "--backends", "fused,torch",
                                      "--rounds", "1", "--steps-per-round", "1"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "batch" in line)
    assert "fused" in header and "torch" in header and "torch / fused" in header

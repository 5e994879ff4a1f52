import json

import pytest
from typer.testing import CliRunner

from charlstm.bench import bench_training_step
from charlstm_cli.main import app


def test_bench_reports_every_backend_and_ratios():
    result = bench_training_step(shapes=[(4, 8, 3)], rounds=2, steps_per_round=2, warmup=1)
    backends = {t["backend"] for t in result["timings"]}
    assert backends == {"fused", "reference", "torch"}
    assert all(t["median_ms"] > 0 for t in result["timings"])
    (ratio,) = result["ratios"]
    med = {t["backend"]: t["median_ms"] for t in result["timings"]}
    assert ratio["fused_vs_torch"] == pytest.approx(med["torch"] / med["fused"])


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
])
def test_bench_bad_options(args, message):
    result = CliRunner().invoke(app, ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output

"""The memory and speed benchmarks, on tiny shapes: the properties they exist to show."""

from __future__ import annotations

import json

from RevGANCore.bench.memory import run_memory_benchmark
from RevGANCore.cli import main


def test_reversible_activation_memory_does_not_grow_with_depth():
    result = run_memory_benchmark(depths=[0, 1, 3], patch=16, ngf=4)
    rows = {row["depth"]: row for row in result["rows"]}
    reversible = [rows[d]["activations_reversible_mib"] for d in (0, 1, 3)]
    assert reversible[0] == reversible[1] == reversible[2] > 0
    naive = [rows[d]["activations_naive_mib"] for d in (0, 1, 3)]
    checkpoint = [rows[d]["activations_checkpoint_mib"] for d in (0, 1, 3)]
    assert naive[0] == reversible[0]  # no core: the three are the same network
    assert naive[0] < naive[1] < naive[2]
    assert reversible[2] < checkpoint[2] < naive[2]
    assert rows[3]["params_mib"] > rows[0]["params_mib"]


def test_bench_cli_prints_the_documented_json(capsys):
    assert main(["bench", "memory", "--depths", "0", "2", "--patch", "16", "--ngf", "4", "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)
    assert set(memory) >= {"device", "patch", "rows"}
    assert set(memory["rows"][0]) >= {"depth", "params_mib", "activations_reversible_mib",
                                      "activations_naive_mib", "activations_checkpoint_mib"}
    assert main(["bench", "speed", "--depths", "0", "1", "--patch", "16", "--batch", "1", "--ngf", "4",
                 "--repeats", "1", "--json"]) == 0
    speed = json.loads(capsys.readouterr().out)
    assert [row["depth"] for row in speed["rows"]] == [0, 1]
    for row in speed["rows"]:
        assert set(row) >= {"naive_s", "reversible_s", "checkpoint_s", "ratio_reversible_naive"}
        assert row["naive_s"] > 0 and row["ratio_reversible_naive"] > 0


def test_cli_reports_unavailable_device_in_one_line(capsys):
    import torch

    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last visible GPU, or any on a CPU machine
    assert main(["bench", "memory", "--device", missing, "--depths", "0", "--patch", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("revgan: error:") and "CUDA" in err
    assert "Traceback" not in err


def test_bench_scale_shows_the_same_kernel_transfer_at_every_pixel_size(capsys):
    assert main(["bench", "scale", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pixels_mm"] == [0.3, 0.6, 0.9] and result["cycles_per_mm"] == [0.3, 0.5]
    for direction in ("forward", "inverse"):
        assert len(result["directions"][direction]["transfer"]) == 3
        assert all(spread < 1.10 for spread in result["directions"][direction]["spread"])
    assert main(["bench", "scale"]) == 0
    assert "spread" in capsys.readouterr().out

"""The CPU window budget follows the memory the machine says is available."""

import pytest
import torch

from RevGANCore.generator_config import GeneratorConfig
from RevGANCore.inference import DEFAULT_CPU_TILE_MIB, MAX_CPU_TILE_MIB, default_cpu_window_mib, make_plan
from RevGANCore.machine_memory import available_memory_bytes


def _meminfo(tmp_path, text):
    path = tmp_path / "meminfo"
    path.write_text(text, encoding="ascii")
    return path


def test_reads_memavailable_in_kilobytes(tmp_path):
    path = _meminfo(tmp_path, "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   8388608 kB\n")
    assert available_memory_bytes(path) == 8 * 2 ** 30


@pytest.mark.parametrize("text", ["MemTotal: 100 kB\n", "MemAvailable: lots\n", ""])
def test_unknown_when_the_file_does_not_say(tmp_path, text):
    assert available_memory_bytes(_meminfo(tmp_path, text)) is None
    assert available_memory_bytes(tmp_path / "missing") is None


def test_default_budget_is_a_bounded_quarter_of_available_memory():
    budget = default_cpu_window_mib()
    assert DEFAULT_CPU_TILE_MIB <= budget <= MAX_CPU_TILE_MIB
    available = available_memory_bytes()
    if available is not None and DEFAULT_CPU_TILE_MIB * 4 < available / 2 ** 20 < MAX_CPU_TILE_MIB * 4:
        assert budget == pytest.approx(available / 4 / 2 ** 20, rel=0.05)


def test_a_larger_budget_recomputes_less_halo():
    config = GeneratorConfig(ngf=16, depth=2, upscale_zyx=(4, 2, 2))
    small = make_plan(config, (48, 512, 512), torch.device("cpu"), memory_mib=DEFAULT_CPU_TILE_MIB)
    large = make_plan(config, (48, 512, 512), torch.device("cpu"), memory_mib=MAX_CPU_TILE_MIB)
    assert large.overhead < small.overhead - 0.2 and len(large) < len(small)


def test_batch_workers_share_the_budget():
    one, four = default_cpu_window_mib(), default_cpu_window_mib(workers=4)
    assert four <= one and four >= DEFAULT_CPU_TILE_MIB / 4
    available = available_memory_bytes()
    if available is not None and available / 2 ** 20 / 16 > DEFAULT_CPU_TILE_MIB:
        assert four == pytest.approx(min(MAX_CPU_TILE_MIB, available / 16 / 2 ** 20), rel=0.1)

"""Hostile model files against the real ``revgan`` command (issue 10, rows 6, 7 and 18).

Each case writes a real hostile file, runs ``revgan translate IN OUT --model BAD`` in its
own process under an address-space limit and a timeout, and asserts: exit code 1, one
error line without a traceback that names the problem, a quick refusal, the inputs
byte-identical and nothing written. Cases that need no process of their own (every
metadata field, every weight check) are in test_modelfile.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from RevGANCore.printable import printable
from RevGANCore.tensorfile import load_safetensors
from RevGANCore.volume_io import write_volume

from hostile_helpers import REPOSITORY, assert_refused, digest_tree, hidden_leftovers, run_revgan
from model_helpers import random_volume, rewrite_model, save_tiny_model, write_raw_safetensors

#: torch needs ~1.5 GiB of address space just to import; building the networks these files
#: describe would need 10-100x more.
MEMORY_LIMIT = 2 * 2 ** 30
#: Python and torch start in 2-6 s on a busy 2-core machine; a built network takes minutes.
QUICK_SECONDS = 60


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.safetensors", "kernel", ngf=3, depth=1)


def _metadata(change, file_name: str = "bad.safetensors"):
    return lambda folder, tiny: rewrite_model(tiny, folder / file_name, change_metadata=change)


def _generator(**settings):
    return _metadata(lambda values: values["generator"].update(settings))


def _overflowing_shape(folder: Path, tiny: Path) -> Path:
    _, strings = load_safetensors(tiny)  # valid RevGAN metadata beside the impossible tensor
    header = {"__metadata__": strings, "w": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}
    return write_raw_safetensors(folder / "bad.safetensors", header)


def _deep_header(folder: Path, tiny: Path) -> Path:
    return write_raw_safetensors(folder / "bad.safetensors", b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}")


def _fifo(folder: Path, tiny: Path) -> Path:
    os.mkfifo(folder / "bad.safetensors")  # nothing ever writes: an open() would block for good
    return folder / "bad.safetensors"


def _integer_weights(folder: Path, tiny: Path) -> Path:
    def change(tensors):
        for name in tensors:
            tensors[name] = tensors[name].round().to(torch.int32)
    return rewrite_model(tiny, folder / "bad.safetensors", change_tensors=change)


HOSTILE_MODELS = {
    # row 6: a 480 KB-class file describing an enormous network
    "depth 10 million": (_generator(depth=10_000_000), ["depth must be between 0 and 128"]),
    "huge network within bounds, tiny weights": (
        _generator(depth=128, ngf=256, coupling_channels=1024), ["weights do not match", "ngf 256, depth 128"]),
    # row 7: wrong types, out-of-range values, impossible shapes, deep JSON, special files
    "ngf 16.0": (_generator(ngf=16.0), ["ngf must be an integer, got 16.0"]),
    "coupling channels 10**6": (_generator(coupling_channels=10 ** 6), ["coupling_channels must be between"]),
    "residual 'no'": (_generator(residual="no"), ["residual must be true or false"]),
    "hu_window [true, 2]": (_metadata(lambda v: v.update(hu_window=[True, 2])), ["hu_window must be two numbers"]),
    "shape overflowing int64": (_overflowing_shape, ["impossibly large"]),
    "header nested 200k deep": (_deep_header, ["nested too deeply"]),
    "FIFO": (_fifo, ["named pipe"]),
    "/dev/zero": (lambda folder, tiny: Path("/dev/zero"), ["/dev/zero", "is a device"]),
    # suite audit: integer weights would be cast silently by load_state_dict
    "integer weights": (_integer_weights, ["has dtype I32, expected floating point"]),
    # row 18: terminal escapes in a name (and in the file's own name, which the error line shows)
    "ANSI escapes in the name": (_metadata(lambda v: v.update(name="\x1b]0;owned\x07\x1b[2J"),
                                           "bad\x1b[31m\nrevgan: ok.safetensors"),
                                 ["name contains control characters", "bad\\x1b[31m\\x0arevgan"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MODELS))
def test_hostile_model_file_is_refused_quickly_in_one_line(tmp_path, tiny_model, case):
    build, fragments = HOSTILE_MODELS[case]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    scan = write_volume(random_volume((6, 8, 8)), inputs / "scan.nrrd")
    model = build(inputs, tiny_model)
    before = digest_tree(inputs)
    started = time.monotonic()
    run = run_revgan(["translate", scan, outputs / "out.nrrd", "--model", model], timeout=2 * QUICK_SECONDS,
                     memory_bytes=MEMORY_LIMIT)
    seconds = time.monotonic() - started
    line = assert_refused(run, *fragments)
    assert printable(str(model)) in line
    assert seconds < QUICK_SECONDS, seconds
    assert "\x1b" not in run.stderr + run.stdout
    assert digest_tree(inputs) == before
    assert os.listdir(outputs) == [] and hidden_leftovers(tmp_path) == []


def test_models_command_refuses_terminal_escapes_in_the_registry(tmp_path, tiny_model):
    folder = tmp_path / "models"
    folder.mkdir()
    index = {"format": "revgan-model-registry", "format_version": 1,
             "models": {"red\x1b[31m\nrevgan: fake line": {"file": tiny_model.name, "task": "kernel"}}}
    (folder / "models.json").write_text(json.dumps(index))
    before = digest_tree(folder)
    run = run_revgan(["models"], env={"REVGAN_MODELS_DIR": str(folder)})
    line = assert_refused(run, "models.json", "model name contains control characters")
    assert "\x1b" not in run.stderr + run.stdout and "\\x1b" in line
    assert digest_tree(folder) == before


# The Slicer panel reads a model card (metadata only) when a file is chosen: it must refuse
# each memory-hostile file in under a second, within the same address-space limit.
_SLICER_CARD_READER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from RevGANSlicerLib import engine
from RevGANCore.errors import ModelFileError
import RevGANCore.modelfile  # imports torch; in Slicer it is loaded before a file is chosen
for path in sys.argv[2:]:
    started = time.monotonic()
    try:
        engine.readMetadata(path)
        print("ACCEPTED", path)
    except ModelFileError as error:
        print(f"{time.monotonic() - started:.3f}", error)
"""


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_slicer_model_card_reader_refuses_huge_networks_in_under_a_second(tmp_path, tiny_model):
    hostile = {"depth": {"depth": 10_000_000}, "ngf": {"ngf": 100_000}, "coupling": {"coupling_channels": 10 ** 6},
               "in_bounds": {"depth": 128, "ngf": 256, "coupling_channels": 1024}}
    files = []
    for name, settings in hostile.items():
        (tmp_path / name).mkdir()
        files.append(_generator(**settings)(tmp_path / name, tiny_model))
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    done = subprocess.run([sys.executable, "-c", _SLICER_CARD_READER, str(REPOSITORY / "RevGANSlicer"),
                           *map(str, files)], env=env, capture_output=True, text=True, timeout=2 * QUICK_SECONDS,
                          preexec_fn=_limit_memory)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    results = done.stdout.splitlines()
    assert len(results) == len(files), done.stdout
    for path, result in zip(files, results):
        seconds, message = result.split(" ", 1)
        assert float(seconds) < 1.0 and str(path) in message, result

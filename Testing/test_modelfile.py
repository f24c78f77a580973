"""Model files: our safetensors reader/writer against the real ``safetensors`` package,
every malformed file refused, model metadata round trips, and the shipped-model registry."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from RevGANCore.errors import ConfigError, ModelFileError
from RevGANCore.modelfile import (MODELS_DIR_ENV, ModelMetadata, check_task, default_model, get_model_path,
                                  list_models, load_model, models_dir, save_model)
from RevGANCore.tensorfile import load_safetensors, save_safetensors

from model_helpers import metadata_for, random_generator, save_tiny_model

safetensors_torch = pytest.importorskip("safetensors.torch")
from safetensors import safe_open  # noqa: E402


def _tensors():
    generator = torch.Generator().manual_seed(0)
    return {
        "weight": torch.randn(3, 4, 5, generator=generator),
        "half": torch.randn(7, generator=generator).half(),
        "brain": torch.randn(2, 3, generator=generator).bfloat16(),
        "double": torch.randn(2, generator=generator).double(),
        "index": torch.arange(-3, 6, dtype=torch.int64),
        "small": torch.tensor([-7, 8], dtype=torch.int8),
        "bytes": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "int32": torch.tensor([[1, -2]], dtype=torch.int32),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


def _assert_same(a: dict, b: dict):
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert tuple(a[name].shape) == tuple(b[name].shape), name
        assert torch.equal(a[name], b[name]), name


def test_our_files_load_in_safetensors_and_theirs_in_ours(tmp_path):
    tensors = _tensors()
    metadata = {"revgan": json.dumps({"a": [1, 2]}), "note": "ünïcode"}
    ours = save_safetensors(tmp_path / "ours.safetensors", tensors, metadata)
    _assert_same(tensors, safetensors_torch.load_file(str(ours)))
    with safe_open(str(ours), framework="pt") as handle:
        assert handle.metadata() == metadata
    theirs = tmp_path / "theirs.safetensors"
    safetensors_torch.save_file(tensors, str(theirs), metadata=metadata)
    loaded, loaded_metadata = load_safetensors(theirs)
    _assert_same(tensors, loaded)
    assert loaded_metadata == metadata
    loaded, _ = load_safetensors(ours)
    _assert_same(tensors, loaded)
    assert not any(name.startswith(".revgan-") for name in os.listdir(tmp_path))  # no temp file left


def _write_raw(path: Path, header, data: bytes = b"", length=None) -> Path:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded) if length is None else length) + encoded + data)
    return path


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("header,data,length,message", [
    ({"a": F32x2}, b"\0" * 4, None, "truncated"),
    ({"a": F32x2}, b"\0" * 12, None, "unexpected bytes"),
    ({"a": F32x2}, b"\0" * 8, 10 ** 9, "not a safetensors file"),
    (b"{not json", b"", None, "not valid JSON"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], '
     b'"data_offsets": [0, 4]}}', b"\0" * 4, None, "duplicate"),
    ({"a": F32x2, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, "overlaps"),
    ({"a": F32x2, "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, b"\0" * 16, None, "gap"),
    ({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown dtype"),
    ({"a": {"dtype": "F8_E4M3", "shape": [8], "data_offsets": [0, 8]}}, b"\0" * 8, None, "not supported"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, None, "need 12"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "non-negative"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, "invalid data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"", None, "exactly dtype"),
    ({"__metadata__": {"k": 3}, "a": F32x2}, b"\0" * 8, None, "strings to strings"),
    ([1, 2], b"", None, "not a safetensors file"),
])
def test_malformed_safetensors_are_refused(tmp_path, header, data, length, message):
    path = _write_raw(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(ModelFileError, match=message) as error:
        load_safetensors(path)
    assert str(path) in str(error.value)


def test_pickled_checkpoints_and_other_files_are_refused_without_unpickling(tmp_path):
    generator = random_generator()
    zipped = tmp_path / "model.pt"
    torch.save(generator.state_dict(), zipped)
    legacy = tmp_path / "legacy.pth"
    torch.save(generator.state_dict(), legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(ModelFileError, match="pickled PyTorch checkpoint; RevGAN never unpickles"):
            load_model(path)
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ModelFileError, match="numpy"):
        load_model(npy)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError, match="too short"):
        load_model(empty)
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ModelFileError, match="folder"):
        load_model(tmp_path)


def test_model_round_trip_keeps_weights_metadata_and_outputs(tmp_path):
    generator = random_generator(ngf=3, depth=2, seed=7)
    metadata = metadata_for("super_resolution", training={"iterations": 12, "dataset": "phantom seed 0",
                                                          "metrics": {"ssim": 0.9}, "git_commit": "abc"},
                            description="a test model", caveats="random weights")
    path = save_model(tmp_path / "sr.safetensors", generator, metadata)
    model = load_model(path)
    assert not model.generator.training
    assert model.metadata.generator == generator.config.to_dict()
    assert model.metadata.scale_factors_xyz == (2, 2, 4)
    assert model.metadata.hu_window == (-1150.0, 350.0)
    assert model.metadata.training["metrics"] == {"ssim": 0.9}
    assert model.metadata.domain_names("inverse") == ("high_resolution", "low_resolution")
    assert model.task == "super_resolution" and model.path == path and "ngf 3, depth 2" in model.describe()
    x = torch.randn(1, 1, 12, 13, 14)
    with torch.no_grad():
        for direction in ("forward", "inverse"):
            assert torch.equal(generator(x, direction), model.generator(x, direction))
    # the JSON is stored under one metadata key, with the documented fields
    _, strings = load_safetensors(path)
    assert set(strings) == {"revgan"}
    stored = json.loads(strings["revgan"])
    assert stored["format"] == "revgan-model" and stored["format_version"] == 1
    assert set(stored) >= {"task", "domains", "generator", "hu_window", "scale_factors_xyz", "training",
                           "description", "caveats", "name", "created_by"}
    check_task(model, "super_resolution")
    with pytest.raises(ModelFileError, match="needs a 'kernel' model"):
        check_task(model, "kernel")


def _rewrite_metadata(source: Path, target: Path, change) -> Path:
    tensors, strings = load_safetensors(source)
    values = json.loads(strings["revgan"])
    change(values)
    return save_safetensors(target, tensors, {"revgan": json.dumps(values)})


def test_bad_model_metadata_and_weights_are_refused(tmp_path):
    good = save_tiny_model(tmp_path / "good.safetensors", "kernel", ngf=3, depth=1)
    cases = {
        "newer": (lambda v: v.update(format_version=2), "format_version 2 was written by a newer RevGAN"),
        "format": (lambda v: v.update(format="something"), "not a RevGAN model"),
        "task": (lambda v: v.update(task="segmentation"), "task must be one of"),
        "factors": (lambda v: v.update(scale_factors_xyz=[2, 2, 4]), "kernel model keeps the voxel grid"),
        "ngf": (lambda v: v["generator"].update(ngf=4), "weights do not match"),
        "arch": (lambda v: v["generator"].update(unknown=1), "unknown generator settings"),
        "window": (lambda v: v.update(hu_window=[350, -1150]), "low < high"),
        "domains": (lambda v: v.update(domains={"x": "a"}), "domains must be"),
    }
    for name, (change, message) in cases.items():
        path = _rewrite_metadata(good, tmp_path / f"{name}.safetensors", change)
        with pytest.raises(ModelFileError, match=message) as error:
            load_model(path)
        assert str(path) in str(error.value)
    tensors, strings = load_safetensors(good)
    save_safetensors(tmp_path / "plain.safetensors", tensors, {})
    with pytest.raises(ModelFileError, match="not a RevGAN model"):
        load_model(tmp_path / "plain.safetensors")
    first = sorted(tensors)[0]
    broken = dict(tensors, **{first: tensors[first].clone().fill_(float("nan"))})
    save_safetensors(tmp_path / "nan.safetensors", broken, strings)
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(tmp_path / "nan.safetensors")
    fewer = {k: v for k, v in tensors.items() if k != first}
    save_safetensors(tmp_path / "fewer.safetensors", fewer, strings)
    with pytest.raises(ModelFileError, match="missing: " + first.replace(".", r"\.")):
        load_model(tmp_path / "fewer.safetensors")


def test_metadata_validation_and_save_consistency(tmp_path):
    with pytest.raises(ConfigError, match="needs scale_factors_xyz"):
        ModelMetadata(task="super_resolution", domains={"x": "lr", "y": "hr"})
    with pytest.raises(ConfigError, match="JSON"):
        ModelMetadata(task="custom", domains={"x": "a", "y": "b"}, training={"x": object()}).to_json()
    generator = random_generator(ngf=3)
    wrong = ModelMetadata(task="custom", domains={"x": "a", "y": "b"}, generator={**generator.config.to_dict(),
                                                                               "ngf": 5})
    with pytest.raises(ConfigError, match="does not match"):
        save_model(tmp_path / "x.safetensors", generator, wrong)
    assert not (tmp_path / "x.safetensors").exists()
    meta = ModelMetadata.from_dict({**metadata_for("kernel").to_dict(), "generator": generator.config.to_dict(),
                                    "future_field": {"kept": True}})
    assert meta.extra == {"future_field": {"kept": True}}
    assert ModelMetadata.from_dict(meta.to_dict()) == meta


# --------------------------------------------------------------------------- registry


def _registry(folder: Path, entries: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.json").write_text(json.dumps({"format": "revgan-model-registry", "format_version": 1,
                                                   "models": entries}))
    return folder


def test_registry_lists_finds_and_defaults(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    save_tiny_model(folder / "sr-a.safetensors", "super_resolution")
    save_tiny_model(folder / "sr-b.safetensors", "super_resolution")
    save_tiny_model(folder / "kernel.safetensors", "kernel")
    (folder / "sr-b.md").write_text("# sr-b\n")
    _registry(folder, {
        "sr-a": {"file": "sr-a.safetensors", "card": "sr-a.md", "task": "super_resolution", "description": "A"},
        "sr-b": {"file": "sr-b.safetensors", "card": "sr-b.md", "task": "super_resolution", "description": "B",
                 "default": True},
        "kernel-1": {"file": "kernel.safetensors", "task": "kernel", "description": "K"},
        "lost": {"file": "lost.safetensors", "task": "custom", "description": "not downloaded"},
    })
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    assert models_dir() == folder
    entries = list_models()
    assert [e.name for e in entries] == ["sr-a", "sr-b", "kernel-1", "lost"]
    assert [e.available for e in entries] == [True, True, True, False]
    assert entries[1].card == folder / "sr-b.md"
    assert default_model("super_resolution").name == "sr-b"
    assert default_model("kernel").name == "kernel-1"
    assert get_model_path("sr-a") == folder / "sr-a.safetensors"
    assert load_model("kernel-1").task == "kernel"
    assert get_model_path(str(folder / "kernel.safetensors")) == folder / "kernel.safetensors"
    with pytest.raises(ModelFileError, match="shipped models: sr-a, sr-b, kernel-1, lost"):
        get_model_path("nonexistent")
    with pytest.raises(ModelFileError, match="missing"):
        get_model_path("lost")
    assert default_model("custom").name == "lost" and not default_model("custom").available


def test_registry_absent_or_broken(tmp_path, monkeypatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ModelFileError, match="no such folder"):
        list_models()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(MODELS_DIR_ENV, str(empty))
    assert list_models() == []
    with pytest.raises(ModelFileError, match="no super_resolution model is shipped yet"):
        default_model("super_resolution")
    with pytest.raises(ModelFileError, match="no models are shipped"):
        get_model_path("some-name")
    (empty / "models.json").write_text("{")
    with pytest.raises(ModelFileError, match="cannot be read"):
        list_models()
    _registry(empty, {"x": {"file": "x.safetensors", "task": "denoise"}})
    with pytest.raises(ModelFileError, match="task must be one of"):
        list_models()


def test_registry_is_found_beside_a_copied_package(tmp_path):
    """The Slicer module layout: RevGANCore/ copied next to Resources/Models/."""
    module_dir = tmp_path / "RevGANSlicer"
    shutil.copytree(Path(__file__).resolve().parents[1] / "RevGANCore", module_dir / "RevGANCore",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _registry(module_dir / "Resources" / "Models",
              {"m": {"file": "m.safetensors", "task": "kernel", "description": "d"}})
    env = {k: v for k, v in os.environ.items() if k not in (MODELS_DIR_ENV, "PYTHONPATH")}
    env["PYTHONPATH"] = str(module_dir)
    code = ("import RevGANCore.modelfile as m; print(m.models_dir()); "
            "print([e.name for e in m.list_models()])")
    output = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True,
                            text=True, check=True).stdout.split("\n")
    assert output[0] == str(module_dir / "Resources" / "Models")
    assert output[1] == "['m']"

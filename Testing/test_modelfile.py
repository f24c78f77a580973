"""Model files: our safetensors reader/writer against the real ``safetensors`` package,
every malformed file refused, model metadata round trips, and the shipped-model registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from RevGANCore.errors import ConfigError, ModelFileError
from RevGANCore.modelfile import ModelMetadata, check_task, load_model, read_metadata, save_model
from RevGANCore.registry import MODELS_DIR_ENV, default_model, get_model_path, list_models, models_dir
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d, generator_state_shapes
from RevGANCore.printable import printable
from RevGANCore.tensorfile import load_safetensors, save_safetensors

from model_helpers import metadata_for, random_generator, rewrite_model, save_tiny_model, write_raw_safetensors

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
    # int64 would wrap [2**32, 2**32] to 0 elements; an empty [0, 2**62] array crashes numpy
    ({"a": {"dtype": "F32", "shape": [2 ** 32, 2 ** 32], "data_offsets": [0, 0]}}, b"", None, "impossibly large"),
    ({"a": {"dtype": "F32", "shape": [0, 2 ** 62], "data_offsets": [0, 0]}}, b"", None, "impossibly large"),
    ({"a": {"dtype": "F32", "shape": [1] * 17, "data_offsets": [0, 4]}}, b"\0" * 4, None, "at most 16"),
    (b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", b"", None, "nested too deeply"),
])
def test_malformed_safetensors_are_refused(tmp_path, header, data, length, message):
    path = write_raw_safetensors(tmp_path / "bad.safetensors", header, data, length)
    with pytest.raises(ModelFileError, match=message) as error:
        load_safetensors(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("special,message", [("/dev/zero", "is a device"), (".", "is a folder")])
def test_only_regular_files_are_opened(tmp_path, special, message):
    path = tmp_path if special == "." else Path(special)
    if not path.exists():
        pytest.skip(f"{special} does not exist here")
    with pytest.raises(ModelFileError, match=message):
        load_safetensors(path)


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
                            description="a test model", caveats="random weights",
                            training_spacing_xyz=(0.8, 0.8, 1.25), training_slice_thickness_mm=5)
    path = save_model(tmp_path / "sr.safetensors", generator, metadata)
    model = load_model(path)
    assert not model.generator.training
    assert model.metadata.generator == generator.config.to_dict()
    assert model.metadata.scale_factors_xyz == (2, 2, 4)
    assert model.metadata.hu_window == (-1150.0, 350.0)
    assert model.metadata.training_spacing_xyz == (0.8, 0.8, 1.25)
    assert model.metadata.training_slice_thickness_mm == 5.0
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


@pytest.fixture
def good_model(tmp_path) -> Path:
    return save_tiny_model(tmp_path / "good.safetensors", "kernel", ngf=3, depth=1)


def _set(key, value, section=None):
    def change(values):
        (values[section] if section else values)[key] = value
    return change


@pytest.mark.parametrize("change,message", [
    (_set("format_version", 2), "format_version 2 was written by a newer RevGAN"),
    (_set("format", "something"), "not a RevGAN model"),
    (_set("task", "segmentation"), "task must be one of"),
    (_set("scale_factors_xyz", [2, 2, 4]), "kernel model keeps the voxel grid"),
    (_set("ngf", 4, "generator"), "weights do not match"),
    (_set("unknown", 1, "generator"), "unknown generator settings"),
    (_set("hu_window", [350, -1150]), "low < high"),
    (_set("domains", {"x": "a"}), "domains must be"),
    # types: a float, a string or a bool where another type belongs is refused, never cast
    (_set("ngf", 3.0, "generator"), "generator ngf must be an integer, got 3.0"),
    (_set("in_channels", True, "generator"), "in_channels must be an integer"),
    (_set("residual", "no", "generator"), "residual must be true or false, got 'no'"),
    (_set("memory_saving", 1, "generator"), "memory_saving must be true or false"),
    (_set("norm", ["none"], "generator"), "norm must be one of"),
    (_set("core_activation", ["silu"], "generator"), "core_activation must be one of"),
    (_set("generator", [1]), "generator must be a GeneratorConfig dictionary"),
    (_set("hu_window", [True, 2]), "hu_window must be two numbers"),
    (_set("hu_window", ["-1000", 400]), "hu_window must be two numbers"),
    (_set("hu_window", [-1e30, 400]), "within"),
    (_set("extra", "ab"), "extra must be a JSON object"),
    # bounds: refused before any module is built
    (_set("ngf", 100_000, "generator"), "ngf must be between 1 and 256, got 100000"),
    (_set("depth", 129, "generator"), "depth must be between 0 and 128"),
    (_set("coupling_channels", 10 ** 6, "generator"), "coupling_channels must be between 1 and 1024"),
    (_set("in_channels", 0, "generator"), "in_channels must be between"),
    # scale factors below 1, above the bound, or not integers
    (lambda v: v.update(task="custom", scale_factors_xyz=[0, 2, 4]), "three integers from 1 to 16"),
    (lambda v: v.update(task="custom", scale_factors_xyz=[2, 2, 64]), "three integers from 1 to 16"),
    (lambda v: v.update(task="custom", scale_factors_xyz=[2.0, 2, 4]), "three integers from 1 to 16"),
    # the training spacing and slice thickness: physical bounds, numbers only
    (_set("training_spacing_xyz", [0.8, 0.8]), "training_spacing_xyz must be null or three numbers"),
    (_set("training_spacing_xyz", [0.8, 0.8, 0.0]), "training_spacing_xyz must be null or three numbers"),
    (_set("training_spacing_xyz", [0.8, "0.8", 1.25]), "training_spacing_xyz must be null or three numbers"),
    (_set("training_spacing_xyz", [0.8, 0.8, 1e9]), "training_spacing_xyz must be null or three numbers"),
    (_set("training_slice_thickness_mm", True), "training_slice_thickness_mm must be null or a number"),
    (_set("training_slice_thickness_mm", -5), "training_slice_thickness_mm must be null or a number"),
    # text shown to people: no terminal escapes, no forged lines, no bidi tricks
    (_set("name", "evil\x1b[2J\x1b[31m"), "name contains control characters"),
    (_set("domains", {"x": "sharp\nrevgan: wrote /etc/passwd", "y": "smooth"}), "domain name x contains"),
    (_set("description", "fine\x1b]0;pwned\x07"), "description contains control characters"),
    (_set("caveats", "safe\u202etxt.exe"), "caveats contains control characters"),
    (_set("created_by", "x" * 257), "at most 256"),
])
def test_bad_model_metadata_is_refused_on_one_line(tmp_path, good_model, change, message):
    path = rewrite_model(good_model, tmp_path / "bad.safetensors", change_metadata=change)
    for reader in (read_metadata, load_model):
        with pytest.raises(ModelFileError, match=message.replace("[", r"\[").replace("(", r"\(")) as error:
            reader(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
        assert all(printable(ch) == ch for ch in str(error.value)), str(error.value)


@pytest.mark.parametrize("text,message", [
    ("{not json", "not valid JSON"),
    ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (json.dumps({"format": "revgan-model", "format_version": 1, "task": "kernel",
                 "domains": {"x": "a", "y": "b"}, "generator": {"ngf": 3},
                 "training": {"deep": []}}).replace("[]", "[" * 200_000 + "]" * 200_000), "nested too deeply"),
])
def test_unparsable_metadata_is_refused(tmp_path, good_model, text, message):
    path = rewrite_model(good_model, tmp_path / "bad.safetensors", metadata_text=text)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_free_text_may_hold_newlines_and_tabs(tmp_path, good_model):
    path = rewrite_model(good_model, tmp_path / "ok.safetensors",
                         change_metadata=_set("caveats", "line one\n\tline two"))
    assert load_model(path).metadata.caveats == "line one\n\tline two"


def _first_weight(tensors):
    return sorted(name for name in tensors if name.endswith("weight"))[0]


def _replace_first(make):
    def change(tensors):
        name = _first_weight(tensors)
        tensors[name] = make(tensors[name])
    return change


@pytest.mark.parametrize("change,message", [
    (_replace_first(lambda t: t.round().to(torch.int32)), "has dtype I32, expected floating point"),
    (_replace_first(lambda t: t.to(torch.int64)), "has dtype I64, expected floating point"),
    (_replace_first(lambda t: t.bool()), "has dtype BOOL, expected floating point"),
    (lambda tensors: tensors.update(bonus=torch.zeros(2)), "unexpected: bonus"),
    (lambda tensors: tensors.update({"core.blocks.7.f.0.weight": torch.zeros(1)}), "unexpected: core.blocks.7"),
    (_replace_first(lambda t: t[:1].clone()), "wrong shape: core.blocks.0.f.0.weight"),
    (lambda tensors: tensors.pop(_first_weight(tensors)), "missing: core.blocks.0.f.0.weight"),
    (_replace_first(lambda t: t.clone().fill_(float("nan"))), "NaN"),
    (_replace_first(lambda t: t.clone().fill_(float("inf"))), "infinite"),
])
def test_weights_that_do_not_fit_the_metadata_are_refused(tmp_path, good_model, change, message):
    path = rewrite_model(good_model, tmp_path / "bad.safetensors", change_tensors=change)
    with pytest.raises(ModelFileError, match=message.replace(".", r"\.")) as error:
        load_model(path)
    assert str(path) in str(error.value)


def test_read_metadata_checks_the_header_without_reading_weights(tmp_path, good_model):
    nan = rewrite_model(good_model, tmp_path / "nan.safetensors",
                        change_tensors=_replace_first(lambda t: t.clone().fill_(float("nan"))))
    assert read_metadata(nan) == load_model(good_model).metadata  # the weights are not read ...
    with pytest.raises(ModelFileError, match="NaN"):
        load_model(nan)  # ... until the model is loaded
    extra = rewrite_model(good_model, tmp_path / "extra.safetensors",
                          change_tensors=lambda tensors: tensors.update(bonus=torch.zeros(2)))
    with pytest.raises(ModelFileError, match="unexpected: bonus"):
        read_metadata(extra)  # names, shapes and dtypes are checked from the header


def test_plain_safetensors_without_metadata_is_refused(tmp_path, good_model):
    tensors, _ = load_safetensors(good_model)
    save_safetensors(tmp_path / "plain.safetensors", tensors, {})
    with pytest.raises(ModelFileError, match="not a RevGAN model"):
        load_model(tmp_path / "plain.safetensors")


@pytest.mark.parametrize("config", [
    GeneratorConfig(), GeneratorConfig(ngf=3, depth=0, residual=True),
    GeneratorConfig(in_channels=2, ngf=3, depth=2, norm="instance", coupling_channels=5),
    GeneratorConfig(ngf=5, depth=3, coupling_channels=2, core_activation="relu"),
    GeneratorConfig(ngf=3, depth=1, encoder_convs=2, prior_taps=5, residual=True),
    GeneratorConfig(ngf=3, depth=0, encoder_convs=1, norm="instance", upscale_zyx=(2, 1, 1), head_channels=4),
])
def test_expected_shapes_are_those_of_the_real_generator(config):
    real = {name: tuple(tensor.shape) for name, tensor in RevGANGenerator3d(config=config).state_dict().items()}
    assert generator_state_shapes(config) == real


def test_printable_escapes_controls_and_keeps_text():
    assert printable("sr \u00fcber 0.5 \u00b5m \u2192 hr") == "sr \u00fcber 0.5 \u00b5m \u2192 hr"
    assert printable("a\x1b[31mb\nc\u202ed\x7f\u2028") == "a\\x1b[31mb\\x0ac\\u202ed\\x7f\\u2028"
    assert printable(ValueError("x\ry")) == "x\\x0dy"


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
    with pytest.raises(ModelFileError, match="^model 'kernel-1' \\(.*kernel.safetensors\\): is a 'kernel' model"):
        check_task(load_model("kernel-1"), "super_resolution")  # named as the user chose it
    assert get_model_path(str(folder / "kernel.safetensors")) == folder / "kernel.safetensors"
    with pytest.raises(ModelFileError, match="named 'nonexistent'; shipped models: sr-a, sr-b, kernel-1, lost"):
        get_model_path("nonexistent")
    with pytest.raises(ModelFileError, match=r"named 'kernel-2' \(did you mean 'kernel-1'\?\)"):
        get_model_path("kernel-2")
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
    code = ("import RevGANCore.registry as m; print(m.models_dir()); "
            "print([e.name for e in m.list_models()])")
    output = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(tmp_path), capture_output=True,
                            text=True, check=True).stdout.split("\n")
    assert output[0] == str(module_dir / "Resources" / "Models")
    assert output[1] == "['m']"


@pytest.mark.parametrize("name,entry,message", [
    ("red\x1b[31m", {"description": "d"}, "model name contains control characters"),
    ("fine", {"description": "two\nlines"}, "description contains control characters"),
    ("fine", {"description": 7}, "description must be a string"),
])
def test_registry_text_that_would_reach_the_terminal_is_refused(tmp_path, monkeypatch, name, entry, message):
    folder = _registry(tmp_path / "models", {name: {"file": "m.safetensors", "task": "kernel", **entry}})
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    with pytest.raises(ModelFileError, match=message):
        list_models()

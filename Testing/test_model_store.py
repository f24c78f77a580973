"""The user's model folder (RevGANCore.model_store) and `revgan models list|add|show|remove`,
with real model files in temporary folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from model_helpers import save_tiny_model, write_raw_safetensors
from RevGANCore.cli import main
from RevGANCore.errors import ModelFileError
from RevGANCore.model_store import (INDEX_FILE, STORE_DIR_ENV, add_model, default_store_dir, list_user_models,
                                    remove_model, store_dir)
from RevGANCore.registry import MODELS_DIR_ENV, all_models, get_model_path


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A shipped registry with one kernel model, an empty user folder, and a model file to add."""
    shipped = tmp_path / "shipped"
    save_tiny_model(shipped / "kernel-shipped.safetensors", "kernel", ngf=2, seed=1)
    (shipped / "models.json").write_text(json.dumps({
        "format": "revgan-model-registry", "format_version": 1,
        "models": {"kernel-shipped": {"file": "kernel-shipped.safetensors", "task": "kernel",
                                      "description": "shipped", "default": True}}}))
    monkeypatch.setenv(MODELS_DIR_ENV, str(shipped))
    user = tmp_path / "user models"
    monkeypatch.setenv(STORE_DIR_ENV, str(user))
    downloads = tmp_path / "downloads"
    model = save_tiny_model(downloads / "my-kernel.safetensors", "kernel", ngf=2, seed=7)
    (downloads / "my-kernel.md").write_text("# my kernel model\ntrained on my scans\n")
    return {"shipped": shipped, "user": user, "model": Path(model), "downloads": downloads}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_added_model_is_copied_with_its_checksum_and_card_and_found_by_name(folders):
    entry = add_model(folders["model"])
    assert store_dir() == folders["user"]
    assert entry.name == "my-kernel" and entry.task == "kernel"
    assert entry.path == folders["user"] / "my-kernel.safetensors"
    assert entry.path.read_bytes() == folders["model"].read_bytes()
    assert entry.sha256 == _sha256(folders["model"])
    assert entry.card is not None and entry.card.read_text().startswith("# my kernel model")
    index = json.loads((folders["user"] / INDEX_FILE).read_text())
    assert index["models"]["my-kernel"]["sha256"] == entry.sha256
    assert [(m.name, m.origin) for m in all_models()] == [("kernel-shipped", "shipped"), ("my-kernel", "user")]
    assert get_model_path("my-kernel") == entry.path
    assert [e.name for e in list_user_models()] == ["my-kernel"]
    # no staging leftovers beside the published files
    assert sorted(p.name for p in folders["user"].iterdir()) == sorted([INDEX_FILE, "my-kernel.md", "my-kernel.safetensors"])


def test_invalid_files_are_refused_naming_the_file_and_nothing_is_added(folders):
    garbage = write_raw_safetensors(folders["downloads"] / "garbage.safetensors", b"not json at all")
    foreign = write_raw_safetensors(folders["downloads"] / "foreign.safetensors", {"__metadata__": {"x": "y"}})
    for bad in (garbage, foreign):
        with pytest.raises(ModelFileError, match=bad.name):
            add_model(bad)
    pickled = folders["downloads"] / "model.pt"
    pickled.write_bytes(b"\x80\x04not a model")
    with pytest.raises(ModelFileError, match="not a .safetensors model file"):
        add_model(pickled)
    assert not folders["user"].exists()
    assert list_user_models() == []


def test_a_stored_file_changed_after_adding_is_refused_on_use(folders):
    entry = add_model(folders["model"], name="tampered")
    other = save_tiny_model(folders["downloads"] / "other.safetensors", "kernel", ngf=2, seed=8)
    entry.path.write_bytes(Path(other).read_bytes())  # still a valid model file, but not the one added
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        get_model_path("tampered")
    entry.path.unlink()
    with pytest.raises(ModelFileError, match="missing"):
        get_model_path("tampered")


def test_a_shipped_file_that_is_not_the_one_its_registry_recorded_is_refused_on_load(folders):
    """A shipped model whose file differs from the registry's sha256 (a damaged install, an
    edited file) would give different results with no error: loading it by name, or by the
    path the default lookup returns, is refused; the intact file loads."""
    from RevGANCore.modelfile import load_model
    from RevGANCore.registry import default_model

    shipped = folders["shipped"]
    registry = json.loads((shipped / "models.json").read_text())
    model_file = shipped / "kernel-shipped.safetensors"
    registry["models"]["kernel-shipped"]["sha256"] = _sha256(model_file)
    (shipped / "models.json").write_text(json.dumps(registry))
    assert load_model("kernel-shipped").name == "kernel-shipped"

    other = save_tiny_model(folders["downloads"] / "other.safetensors", "kernel", ngf=2, seed=8)
    model_file.write_bytes(Path(other).read_bytes())  # a valid model file, but not the shipped one
    for how in ("kernel-shipped", default_model("kernel").path):
        with pytest.raises(ModelFileError, match="checksum mismatch .* for model 'kernel-shipped': the shipped"):
            load_model(how)

    registry["models"]["kernel-shipped"]["sha256"] = "not a digest"
    (shipped / "models.json").write_text(json.dumps(registry))
    with pytest.raises(ModelFileError, match="sha256.*64 lower-case hexadecimal"):
        get_model_path("kernel-shipped")


def test_every_shipped_model_records_the_checksum_of_its_file():
    """Resources/Models/models.json: after replacing a model file, run
    `python tools/install_models.py --checksums`."""
    registry_path = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "models.json"
    registry = json.loads(registry_path.read_text())
    for name, entry in registry["models"].items():
        assert entry.get("sha256") == _sha256(registry_path.parent / entry["file"]), name


def test_names_of_shipped_or_existing_models_and_unsafe_names_are_refused(folders):
    with pytest.raises(ModelFileError, match="shipped model"):
        add_model(folders["model"], name="kernel-shipped")
    with pytest.raises(ModelFileError, match="cannot name a model"):
        add_model(folders["model"], name="../escape")
    add_model(folders["model"], name="mine")
    with pytest.raises(ModelFileError, match="exists"):
        add_model(folders["model"], name="mine")
    other = save_tiny_model(folders["downloads"] / "other.safetensors", "kernel", ngf=2, seed=8)
    replaced = add_model(other, name="mine", replace=True)
    assert replaced.sha256 == _sha256(Path(other)) and get_model_path("mine").read_bytes() == Path(other).read_bytes()


def test_removing_takes_away_a_user_model_but_never_a_shipped_one(folders):
    entry = add_model(folders["model"])
    removed = remove_model("my-kernel")
    assert removed.name == "my-kernel"
    assert not entry.path.exists() and not entry.card.exists()
    assert list_user_models() == []
    with pytest.raises(ModelFileError, match="no model file, shipped or user model"):
        get_model_path("my-kernel")
    with pytest.raises(ModelFileError, match="shipped model"):
        remove_model("kernel-shipped")
    assert (folders["shipped"] / "kernel-shipped.safetensors").is_file()


def test_a_damaged_index_is_a_one_line_error_naming_it(folders):
    folders["user"].mkdir()
    (folders["user"] / INDEX_FILE).write_text("{broken")
    with pytest.raises(ModelFileError, match=INDEX_FILE):
        list_user_models()
    (folders["user"] / INDEX_FILE).write_text(json.dumps({
        "format": "revgan-user-models", "format_version": 1,
        "models": {"evil": {"file": "../../etc/passwd.safetensors", "sha256": "0" * 64, "task": "kernel"}}}))
    with pytest.raises(ModelFileError, match="file name in"):
        list_user_models()


def test_the_default_folder_is_the_users_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(STORE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr("os.name", "posix")
    assert default_store_dir() == tmp_path / "data" / "revgan" / "models"
    assert store_dir() == default_store_dir()


def test_the_models_command_adds_lists_shows_and_removes(folders, capsys):
    assert main(["models", "add", str(folders["model"]), "--name", "cli-kernel-converter-fitted-at-our-site"]) == 0
    assert "sha256 " + _sha256(folders["model"]) in capsys.readouterr().out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "kernel-shipped" in out and "user models in" in out and "cli-kernel-converter-fitted-at-our-site" in out
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    # however long a name, the tasks start in one column
    starts = {line.index(entry.task, 2 + len(entry.name)) for entry in all_models() for line in rows
              if line.split()[0] == entry.name}
    assert len(rows) == len(all_models()) >= 2 and len(starts) == 1
    assert main(["models", "list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["models"]}
    assert rows["cli-kernel-converter-fitted-at-our-site"]["origin"] == "user" and rows["cli-kernel-converter-fitted-at-our-site"]["sha256"] == _sha256(folders["model"])
    assert rows["kernel-shipped"]["origin"] == "shipped"
    assert main(["models", "show", "cli-kernel-converter-fitted-at-our-site", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["metadata"]["task"] == "kernel" and card["card"].endswith("cli-kernel-converter-fitted-at-our-site.md")
    assert main(["models", "show", "cli-kernel-converter-fitted-at-our-site"]) == 0
    assert "sha256:" in capsys.readouterr().out
    assert main(["models", "remove", "kernel-shipped"]) == 1
    assert "shipped model" in capsys.readouterr().err
    assert main(["models", "remove", "cli-kernel-converter-fitted-at-our-site"]) == 0
    assert main(["models", "add", str(folders["downloads"] / "my-kernel.md")]) == 1
    assert "revgan: error:" in capsys.readouterr().err

"""Shared pytest set-up: deterministic torch on few threads, small default dtype."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_torch():
    import torch

    torch.manual_seed(0)
    yield


@pytest.fixture
def no_registry(tmp_path, monkeypatch):
    """No shipped models: the registry points at an empty folder (use with
    ``pytestmark = pytest.mark.usefixtures("no_registry")``)."""
    from RevGANCore.registry import MODELS_DIR_ENV

    empty = tmp_path / "no-models"
    empty.mkdir()
    monkeypatch.setenv(MODELS_DIR_ENV, str(empty))

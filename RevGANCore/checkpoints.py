"""Training checkpoints that survive crashes.

Layout under ``<output_dir>/checkpoints``::

    step_00000200.model.safetensors   the generator as a model file (``load_model`` reads it)
    step_00000200.state.safetensors   discriminators, optimizer moments, image pools, RNG;
                                      scalars (step, grad-scaler, best metric) as JSON metadata
    latest.json                       {"step": 200, "model": ..., "state": ...}

Every file is written to a temporary name and renamed, and ``latest.json`` is replaced only
after both files of a step exist, so a process killed at any instant (SIGKILL included)
leaves the previous complete checkpoint loadable. Nothing is unpickled: tensors go through
safetensors, everything else through JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from .output import write_text_atomic
from .errors import ConfigError, ModelFileError
from .tensorfile import load_safetensors, save_safetensors

STATE_KEY = "revgan_training_state"
_STEP_PATTERN = re.compile(r"^step_(\d{8})\.model\.safetensors$")


def write_json_atomic(path: Path, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False))


# ----------------------------------------------------------------- optimizer <-> tensors


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Split an optimizer's state_dict into tensors and a JSON-able remainder."""
    state = optimizer.state_dict()
    tensors: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, Dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, prefix: str, tensors: Dict[str, torch.Tensor],
                           remainder: dict) -> None:
    state: Dict[int, Dict[str, Any]] = {}
    marker = f"{prefix}.state."
    for name, tensor in tensors.items():
        if name.startswith(marker):
            index, key = name[len(marker):].split(".", 1)
            state.setdefault(int(index), {})[key] = tensor
    for index, values in remainder.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": remainder["param_groups"]})


# ------------------------------------------------------------- a run's state <-> tensors


def pack_training_state(modules: Dict[str, torch.nn.Module], optimizers: Dict[str, torch.optim.Optimizer],
                        pools: Dict[str, Any], device: torch.device, scalars: dict) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Everything a bit-exact resume needs besides the generator: module weights, optimizer
    moments, image pools (``state_tensors``/``load_state_tensors``), the RNG states, and JSON
    ``scalars``. Returns (tensors, JSON state)."""
    tensors: Dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        for name, tensor in module.state_dict().items():
            tensors[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous()
    remainders = {}
    for prefix, optimizer in optimizers.items():
        opt_tensors, remainders[prefix] = optimizer_to_tensors(optimizer, prefix)
        tensors.update(opt_tensors)
    for prefix, pool in pools.items():
        tensors.update(pool.state_tensors(prefix))
    tensors["rng.cpu"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors, {**scalars, "optimizers": remainders}


def unpack_training_state(tensors: Dict[str, torch.Tensor], state: dict, modules: Dict[str, torch.nn.Module],
                          optimizers: Dict[str, torch.optim.Optimizer], pools: Dict[str, Any],
                          device: torch.device) -> dict:
    """Restores what :func:`pack_training_state` saved; returns the JSON scalars."""
    for prefix, module in modules.items():
        module.load_state_dict({name[len(prefix) + 1:]: t for name, t in tensors.items()
                                if name.startswith(prefix + ".")})
    for prefix, optimizer in optimizers.items():
        optimizer_from_tensors(optimizer, prefix, tensors, state["optimizers"][prefix])
    for prefix, pool in pools.items():
        pool.load_state_tensors(prefix, tensors, device)
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return {key: value for key, value in state.items() if key != "optimizers"}


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class CheckpointFiles:
    step: int
    model: Path
    state: Path


class CheckpointStore:
    """Writes, finds and prunes the checkpoints of one training run."""

    def __init__(self, output_dir: Path, keep_last: int = 3):
        self.folder = Path(output_dir) / "checkpoints"
        self.keep_last = max(1, int(keep_last))

    def files_for(self, step: int) -> CheckpointFiles:
        stem = f"step_{step:08d}"
        return CheckpointFiles(step, self.folder / f"{stem}.model.safetensors", self.folder / f"{stem}.state.safetensors")

    def save(self, step: int, write_model, state_tensors: Dict[str, torch.Tensor], state_json: dict) -> CheckpointFiles:
        """``write_model(path)`` writes the model file; the state goes beside it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files = self.files_for(step)
        write_model(files.model)
        save_safetensors(files.state, state_tensors, {STATE_KEY: json.dumps(state_json)})
        write_json_atomic(self.folder / "latest.json",
                          {"step": step, "model": files.model.name, "state": files.state.name})
        self._prune()
        return files

    def _complete_steps(self) -> List[int]:
        if not self.folder.is_dir():
            return []
        steps = []
        for entry in self.folder.iterdir():
            match = _STEP_PATTERN.match(entry.name)
            if match and self.files_for(int(match.group(1))).state.exists():
                steps.append(int(match.group(1)))
        return sorted(steps)

    def _prune(self) -> None:
        for step in self._complete_steps()[:-self.keep_last]:
            files = self.files_for(step)
            for path in (files.state, files.model):  # state first: a lone model file is ignored
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass

    def latest(self) -> Optional[CheckpointFiles]:
        """The newest complete checkpoint: the one ``latest.json`` names, or, if that file is
        missing or names files that are gone, the newest complete pair on disk."""
        pointer = self.folder / "latest.json"
        if pointer.is_file():
            try:
                payload = json.loads(pointer.read_text(encoding="utf-8"))
                files = self.files_for(int(payload["step"]))
                if files.model.exists() and files.state.exists():
                    return files
            except (ValueError, KeyError, TypeError):
                pass
        steps = self._complete_steps()
        return self.files_for(steps[-1]) if steps else None

    @staticmethod
    def read_state(files: CheckpointFiles) -> Tuple[Dict[str, torch.Tensor], dict]:
        tensors, strings = load_safetensors(files.state)
        if STATE_KEY not in strings:
            raise ModelFileError(f"{files.state}: not a RevGAN training-state file")
        try:
            return tensors, json.loads(strings[STATE_KEY])
        except ValueError as error:
            raise ModelFileError(f"{files.state}: training state is not valid JSON ({error})") from None


def require_resumable(store: CheckpointStore) -> CheckpointFiles:
    files = store.latest()
    if files is None:
        raise ConfigError(f"--resume: no complete checkpoint in {store.folder}")
    return files

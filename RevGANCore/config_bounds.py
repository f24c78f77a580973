"""The allowed range of every numeric training setting, checked in one place.

:func:`check_bounds` walks a :class:`~RevGANCore.config.TrainConfig` and refuses any int or
float setting (or element of a tuple setting) that is not a finite number of the right kind
inside its range, naming the setting by its dotted path (``optim.lr``). A numeric setting
without an entry in :data:`BOUNDS` is a programming error, so a new field cannot slip in
unchecked. ``model.*`` is checked by the network configurations themselves.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Tuple

from .errors import ConfigError

#: NumPy's legacy seeding (``np.random.seed``) takes 32-bit seeds.
MAX_SEED = 2 ** 32 - 1
#: Checkpoint file names hold the step in 8 digits; a longer step would not be found on resume.
MAX_ITERATIONS = 99_999_999


@dataclass(frozen=True)
class Bound:
    low: float
    high: float = math.inf
    high_open: bool = False  # high itself is not allowed
    low_open: bool = False   # low itself is not allowed

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_number(self.low)}, "
                f"{_number(self.high)}{')' if self.high_open else ']'}")


def _shown(value: Any) -> str:
    """A value as the message shows it: hostile input can be a 400-digit number."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


AT_LEAST_ONE = Bound(1)
NOT_NEGATIVE = Bound(0)
FRACTION = Bound(0, 1)

BOUNDS: Dict[str, Bound] = {
    "seed": Bound(0, MAX_SEED),
    "data.patch_size": AT_LEAST_ONE,
    "data.batch_size": AT_LEAST_ONE,
    "data.foreground_fraction": FRACTION,
    "data.val_patches": AT_LEAST_ONE,
    "data.num_workers": NOT_NEGATIVE,
    "data.generate.cases": Bound(0, 10_000),
    "data.generate.seed": Bound(0, MAX_SEED),
    "data.generate.shape": Bound(8, 2048),
    "data.real.val_slices": Bound(0, 10_000),
    "data.real.batch_size": NOT_NEGATIVE,
    "data.real.fwhm_range": Bound(0, 3, low_open=True),  # new pixels; real_degradation.MAX_FWHM_SCALE
    "objective.lambda_l1": NOT_NEGATIVE,
    "objective.lambda_degraded_pairs": NOT_NEGATIVE,
    "objective.lambda_degraded_means": NOT_NEGATIVE,
    "objective.lambda_recorrupted_pairs": NOT_NEGATIVE,
    "objective.lambda_cycle": NOT_NEGATIVE,
    "objective.lambda_identity": NOT_NEGATIVE,
    "objective.lambda_physics": NOT_NEGATIVE,
    "objective.physics_pool": Bound(1, 1024),
    "objective.lambda_spectrum": NOT_NEGATIVE,
    "objective.lambda_slab": NOT_NEGATIVE,
    "objective.pool_size": Bound(0, 10_000),
    "optim.iterations": Bound(1, MAX_ITERATIONS),
    "optim.lr": Bound(0, low_open=True),
    "optim.beta1": Bound(0, 1, high_open=True),  # Adam's moment decay rates
    "optim.beta2": Bound(0, 1, high_open=True),
    "optim.decay_start": FRACTION,
    "optim.grad_clip": NOT_NEGATIVE,
    "checkpoint.every": AT_LEAST_ONE,
    "checkpoint.keep_last": AT_LEAST_ONE,
    "checkpoint.validate_every": AT_LEAST_ONE,
    "logging.log_every": AT_LEAST_ONE,
    "logging.preview_every": NOT_NEGATIVE,
}

#: Sections whose numbers their own dataclasses check (GeneratorConfig, DiscriminatorConfig).
CHECKED_ELSEWHERE = ("model",)


def numeric_settings(config: Any, prefix: str = "") -> Iterator[Tuple[str, type, Any]]:
    """(dotted path, int or float, value) of every numeric setting under ``config``; tuple
    settings yield one entry per element under the tuple's path."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        path = f"{prefix}{field.name}"
        if path in CHECKED_ELSEWHERE:
            continue
        value = getattr(config, field.name)
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            yield from numeric_settings(value, path + ".")
        elif annotation in (int, float):
            yield path, annotation, value
        elif typing.get_origin(annotation) is tuple and typing.get_args(annotation)[0] in (int, float):
            kind = typing.get_args(annotation)[0]
            for element in (value if isinstance(value, tuple) else (value,)):
                yield path, kind, element


def check_bounds(config: Any) -> None:
    """Refuse the first numeric setting that is not a finite number of its kind within its bound."""
    for path, kind, value in numeric_settings(config):
        bound = BOUNDS[path]  # a KeyError here means a new setting lacks its bound
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if kind is int and not is_int:
            raise ConfigError(f"{path} must be an integer {bound.describe()}, got {_shown(value)}")
        if not is_int and not (isinstance(value, float) and math.isfinite(value)):
            raise ConfigError(f"{path} must be a finite number {bound.describe()}, got {_shown(value)}")
        if not bound.holds(value):  # exact for ints of any size: Python compares int and float exactly
            raise ConfigError(f"{path} must be {bound.describe()}, got {_shown(value)}")

"""The project's exception types.

Every error a user can cause (a bad file, a bad configuration, a bad argument) is raised
as a :class:`RevGANError` subclass whose message names the problem and, where there is
one, the file. The command line prints such messages without a traceback.
"""

from __future__ import annotations


class RevGANError(Exception):
    """Base class of errors caused by input (files, configuration, arguments)."""


class VolumeError(RevGANError):
    """A volume file or array cannot be read, written or used."""


class ValueRangeError(VolumeError):
    """A result holds values that the output's data type cannot store."""


class ModelFileError(RevGANError):
    """A model file is missing, corrupt, of an unknown format, or for another task."""


class OutputError(RevGANError):
    """An output cannot be written safely (its name, its location, space, a failed write)."""


class ConfigError(RevGANError):
    """A configuration cannot run (unknown keys, wrong types, impossible sizes)."""


class ArchitectureError(RevGANError):
    """A network was built from modules that break its guarantees (e.g. reversibility)."""


class CancelledError(RevGANError):
    """Long work stopped because the caller asked for it."""

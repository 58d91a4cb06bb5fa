"""Errors a user can act on.

Every error raised for bad input is a :class:`DraemZooError`: its message names the
file, folder or config key at fault and says what to do about it. The CLI prints
these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DraemZooError(Exception):
    """Bad input that the user can fix; the message says how."""


class ConfigError(DraemZooError, ValueError):
    """A config key is unknown, has the wrong type, or an impossible value."""


class DataError(DraemZooError):
    """A dataset, image or texture folder cannot be used as it is."""


class TrainingDiverged(DraemZooError):
    """The loss became NaN or infinite: the run stops and keeps its last good checkpoint."""


class OutputLocked(DraemZooError):
    """Another live process is writing into the same output folder."""


class SynthesisWorkerDied(DraemZooError):
    """A synthesis worker process of the training run died (killed, or out of memory)."""

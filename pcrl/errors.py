"""Errors the CLI turns into a one-line message and a non-zero exit.

Library code raises these with a message that names the file, case or params key at
fault; anything else escaping the CLI is a bug and keeps its traceback.
"""

from __future__ import annotations


class PcrlError(Exception):
    """Base class of the errors a user can fix (bad input, bad params, missing files)."""


class ConfigError(PcrlError):
    """params.yaml (or another config) is invalid; the message names the key."""


class DataError(PcrlError):
    """An input file is missing, truncated, corrupt or inconsistent; the message names it."""


class PreemptedError(Exception):
    """A job stopped on a scheduler's signal after checkpointing; the CLI exits with
    :attr:`exit_code` (128 + the signal number) and a rerun resumes. Not a PcrlError: the
    run is not at fault. Raised as :class:`pcrl.engine.Preempted`."""

    @property
    def exit_code(self) -> int:
        """128 + the signal number (143: SIGTERM)."""
        return 143


class ChecksumError(DataError):
    """A downloaded or local file does not match its published checksum."""


class OutputWriteError(DataError):
    """An output could not be written (disk full, file size limit, quota, read-only or
    unwritable folder); the message names the file or folder and the reason."""

"""The base of every error pfadseg reports to its user: a file, a key or a setting to fix, named in the message.

The command line and the DVC stage entry catch :class:`PfadsegError` once and print its message, exiting with its
``exit_status`` (2 for a params error, 1 otherwise); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class PfadsegError(Exception):
    """An error the user can act on; its message names the file or key and what to do."""

    exit_status = 1  # of the command line and of a DVC stage that stops on it


class UsageError(PfadsegError, ValueError):
    """A value given on the command line, in the environment or in params that cannot be used as given."""


class MissingFileError(PfadsegError, FileNotFoundError):
    """A file or folder the user named, or that an earlier stage should have written, is not there."""


class RunError(PfadsegError, RuntimeError):
    """A process pfadseg started (dvc, a benchmark worker) or a batch of experiments that did not finish."""

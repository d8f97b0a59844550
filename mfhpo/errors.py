"""One exception type for every user-facing problem.

The CLI catches :class:`MfhpoError` and prints its message on one line (no traceback),
so every message must name the file / key / frame it is about. ``exit_code`` is what the
process exits with: 2 for bad input (the default), 1 for a failure of the environment
(a full disk), 130 for an interrupted run.
"""


class MfhpoError(Exception):
    """A problem with the user's input (file, key, value) that deserves a one-line message."""

    exit_code = 2


class EnvironmentFailure(MfhpoError):
    """The machine failed the run (no space left on the device, ...); state on disk stays valid."""

    exit_code = 1


class Interrupted(MfhpoError):
    """Ctrl-C / SIGTERM: the run stopped; its message says how to resume."""

    exit_code = 130

"""One exception type for every user-facing problem.

The CLI catches :class:`MfhpoError` and prints its message on one line (no traceback),
so every message must name the file / key / frame it is about.
"""


class MfhpoError(Exception):
    """A problem with the user's input (file, key, value) that deserves a one-line message."""

"""The exceptions the command-line tools turn into a one-line message instead of a traceback: a
:class:`UserError` exits with code 2, an :class:`Interrupted` run with 128 + the signal number. Also
:func:`closest`, the "did you mean" of every message about an unknown name."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: object, choices: Iterable[object], n: int = 1, cutoff: float = 0.5) -> list[str]:
    """The (at most ``n``) choices that look most like ``name``, best first, as strings."""
    return difflib.get_close_matches(str(name), [str(c) for c in choices], n=n, cutoff=cutoff)


class UserError(Exception):
    """Something the user asked for cannot be done (a bad config, missing files, an unusable
    checkpoint). The message names the problem; the command line prints it without a traceback."""


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving its state; the message says how to continue."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum

"""The exceptions the command-line tools turn into a one-line message instead of a traceback: a
:class:`UserError` exits with code 2, an :class:`Interrupted` run with 128 + the signal number."""


class UserError(Exception):
    """Something the user asked for cannot be done (a bad config, missing files, an unusable
    checkpoint). The message names the problem; the command line prints it without a traceback."""


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after saving its state; the message says how to continue."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum

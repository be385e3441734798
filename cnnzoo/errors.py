"""The one exception type the command-line tools turn into a one-line message and exit code 2."""


class UserError(Exception):
    """Something the user asked for cannot be done (a bad config, missing files, an unusable
    checkpoint). The message names the problem; the command line prints it without a traceback."""

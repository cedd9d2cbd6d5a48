"""Errors a user can cause: bad data, a checkpoint that does not fit, a bad setting.

Each message is one line naming the file (and line) or the setting at fault; ``train.py`` prints it as
``error: <message>`` and exits with status 2, without a traceback (``--debug`` shows it).
"""

__all__ = ["CheckpointError", "ConfigError", "DataError", "UserError", "first_line"]


class UserError(Exception):
    """Base class of the errors caused by the user's input, reported without a traceback."""


class DataError(UserError, ValueError):
    """Bad dataset input; the message names the file (and the split-file line)."""


class CheckpointError(UserError, ValueError):
    """A file that is not a usable checkpoint, or one that does not fit the network or method."""


class ConfigError(UserError, ValueError):
    """A setting that cannot work (unknown split, missing file, impossible value)."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message without surrounding quotes (a ``KeyError`` quotes
    its message), or the exception's type when it has none: the reason a one-line error quotes."""
    text = str(error).strip().strip("'\"")
    return text.splitlines()[0] if text else type(error).__name__

"""Errors a user can cause: bad data, a checkpoint that does not fit, a bad setting.

Each message is one line naming the file (and line) or the setting at fault; ``train.py`` prints it as
``error: <message>`` and exits with status 2, without a traceback (``--debug`` shows it).
"""

__all__ = ["CheckpointError", "ConfigError", "DataError", "UserError", "check_range", "first_line"]


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


def check_range(
    setting: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
    error: type[UserError] = ConfigError,
) -> None:
    """Raises ``error`` naming ``setting`` (as the command line spells it) unless ``low ≤ value ≤ high``
    and ``value > above`` (each bound optional); None (a setting left unset) passes."""
    if value is None:
        return
    wrong = (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    )
    if not wrong:
        return
    if low is not None and high is not None:
        bounds = f"between {low:g} and {high:g}"
    else:
        parts = [f"at least {low:g}" if low is not None else f"above {above:g}" if above is not None else ""]
        parts.append(f"at most {high:g}" if high is not None else "")
        bounds = " and ".join(part for part in parts if part)
    raise error(f"{setting} must be {bounds}, got {value:g}")

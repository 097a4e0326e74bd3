"""Error types shared by the runtime.

Job-level errors stop a job before or during work and exit non-zero; per-instance failures become
error records (``{"error": {"code": ..., "message": ...}}``) and never stop a job.
"""

import re
from typing import Any

# google.rpc.Code values used in per-instance error records.
CODE_INVALID_ARGUMENT = 3  # the instance itself is bad (malformed JSON, wrong arity, non-numeric)
CODE_INTERNAL = 13  # the model failed on an instance that looked valid


class BatchPredictError(Exception):
    """Base class for job-level errors."""

    exit_code = 13


class UserError(BatchPredictError):
    """A user's mistake: bad arguments, missing input, unreadable model. Exits 1.

    The message names the offending value and the fix.
    """

    exit_code = 1


class InternalError(BatchPredictError):
    """Something failed that is not the user's input. Exits 13."""

    exit_code = 13


class ModelServerError(InternalError):
    """The model server cannot answer any more (a serving container died): stops the job.

    Never turned into an instance's error record: the engine does not isolate it.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, else its type's name.

    Client libraries append whole response bodies (gcsfs, google-api-core); messages that name a
    value and its fix quote only this line.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class InstanceError(Exception):
    """One instance cannot be predicted; becomes an error record with ``code``.

    ``record`` is True when the failure's display is the input record itself (its key could not
    be read: malformed, or not convertible), so the error record labels it ``instance``, not
    ``key``.
    """

    def __init__(
        self,
        message: str,
        code: int = CODE_INVALID_ARGUMENT,
        record: bool = False,
        cause: str | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.record = record
        # What errors_stats counts it under: the message without the instance's values (see
        # ``error_cause``); None when the message is already one (the engine's own messages).
        self.cause = cause
        # Where the instance came from, when the source knows: {"uri": ..., "line": N} (or "row",
        # "record"; see Batch.locate).
        self.source: dict[str, Any] | None = None
        # Its position among the instances of the predict call that failed (engine bookkeeping).
        self.row = -1


# In a cause, what replaces a quoted literal, a number that is not a small count, an address.
VALUE_PLACEHOLDER = "<value>"
NUMBER_PLACEHOLDER = "<number>"
# A cause longer than this is cut (a model may put a whole array's repr in its message).
MAX_CAUSE_CHARS = 500
# Not after "=" or "(": ``dtype='numeric'``, ``dtype('float64')`` are the code's, not the data's.
_QUOTED = re.compile(r"""(?<![\w'"=(])(?:'[^'\n]*'|"[^"\n]*")(?![\w'"])""")
# Hex addresses (``<object at 0x7f...>``), floats, and integers of 4 digits or more; counts and
# shapes ("X has 3 features, but ... is expecting 28") are kept: they name the cause.
_NUMBER = re.compile(
    r"(?<![\w.])(?:0x[0-9a-fA-F]+|[-+]?(?:\d+\.\d*|\.\d+|\d+(?=[eE]))(?:[eE][-+]?\d+)?"
    r"|[-+]?\d{4,}|nan|inf)(?![\w.])"
)


def error_cause(message: str) -> str:
    """The cause in an exception's text from model code: its message without instance values.

    ``errors_stats`` counts failures by cause, so one line stands for every instance that failed
    the same way (``ValueError: could not convert string to float: <value>``), whatever values
    they held; the errors file keeps each message as raised. Quoted literals become ``<value>``
    (not after ``=`` or ``(``, where they are the code's: ``dtype='numeric'``); floats, integers
    of 4 digits or more and hex addresses become ``<number>`` (small integers stay: they are
    counts and shapes, part of the cause); the result is cut at MAX_CAUSE_CHARS.
    """
    cause = _QUOTED.sub(VALUE_PLACEHOLDER, message)
    cause = _NUMBER.sub(NUMBER_PLACEHOLDER, cause)
    if len(cause) > MAX_CAUSE_CHARS:
        cause = cause[: MAX_CAUSE_CHARS - 3] + "..."
    return cause


# google.rpc.Code for a predict call that did not return in time.
CODE_DEADLINE_EXCEEDED = 4

# errno values that mean the user's disk or quota is full, with what to do.
_DISK_FULL = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "EFBIG": "file too large for the filesystem or the process's file size limit",
}


def environment_error(err: BaseException) -> UserError | None:
    """A UserError for an OSError caused by the user's environment (disk full), else None."""
    import errno

    if not isinstance(err, OSError) or err.errno is None:
        return None
    name = errno.errorcode.get(err.errno, "")
    where = f" writing {err.filename!r}" if getattr(err, "filename", None) else ""
    if name in _DISK_FULL:
        return UserError(
            f"Disk full{where}: {_DISK_FULL[name]} ({name}). Free space, or write the output "
            "elsewhere (gcs_destination_output_uri_prefix)."
        )
    if name in ("EACCES", "EPERM", "EROFS"):
        return UserError(
            f"Permission denied{where}: {err.strerror} ({name}). Check the path's permissions."
        )
    return None

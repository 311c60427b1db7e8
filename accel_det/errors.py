"""The one exception type that tools turn into a one-line message and a non-zero exit code, and
the first line of any exception for such messages."""


class AccelDetError(ValueError):
    """Bad input or an impossible request, explained in one sentence for the user."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

"""The one exception type that tools turn into a one-line message and a non-zero exit code."""


class AccelDetError(ValueError):
    """Bad input or an impossible request, explained in one sentence for the user."""

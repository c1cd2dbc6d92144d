"""The one exception type that reaches the user as a sentence instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: the message names the thing and the fix."""

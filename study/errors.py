"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """A problem in what the user asked for, with a message that names the fix."""

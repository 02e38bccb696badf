"""Errors the CLI turns into one line on stderr."""


class UserError(Exception):
    """A problem in what the user asked for, with a message that names the fix (exit code 2)."""


class RunAborted(Exception):
    """A run stopped by something outside the user's input (its cells handed back; exit code 1)."""


class ClusterLost(RuntimeError):
    """The Ray cluster (or this driver's node of it, or the warm workers) is gone, or no worker can start on it."""

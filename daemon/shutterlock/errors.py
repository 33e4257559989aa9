"""The one error hierarchy: every problem the program reports derives from :class:`ShutterlockError`.

Each error carries a one-line message for people and the exit code the CLI ends with (the contract:
1 the operation failed, 2 usage or configuration error), so the CLI maps errors to exit codes in one
place and nothing reaches the user as a traceback. Modules subclass these for the cases their callers
need to tell apart (a store error that is transient, a file that changed while it was read).
"""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ShutterlockError(Exception):
    """A problem worth one line to the user; ``exit_code`` is what the CLI exits with."""

    exit_code = EXIT_FAILED


class UsageError(ShutterlockError):
    """The user asked for something that cannot be done as asked (exit 2)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration problem the user must fix; names the file, the table and the key."""


class KeyProblem(UsageError):
    """The master key could not be obtained or unwrapped (wrong passphrase, missing key file)."""


class OperationFailed(ShutterlockError):
    """The operation was attempted and could not be carried out."""


class DaemonNotRunning(ShutterlockError):
    """No daemon answers on the control socket."""


class ControlError(ShutterlockError):
    """The daemon answered a control request with an error."""


class AlreadyRunning(ShutterlockError):
    """Another daemon holds the instance lock for this state directory."""

"""The one exception type the CLI turns into a one-line message and an exit code."""

from __future__ import annotations

# podman's exit codes: 125 for the tool's own errors, 126 when the command cannot be
# executed, 127 when it is not found.
EXIT_ERROR = 125
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class RlError(Exception):
    """A failure the user can act on: the message says what failed and what to do."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

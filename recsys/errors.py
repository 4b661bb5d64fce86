"""One error base class that knows its HTTP status; specific subclasses say what was wrong."""

from __future__ import annotations


class RecsysError(Exception):
    """Base of every error the platform raises on purpose."""

    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(RecsysError):
    """Settings could not be built: an unknown key, a bad value or an unreadable file."""

    http_status = 400


class InvalidInputError(RecsysError):
    """Input data is wrong; nothing was written."""

    http_status = 400


class ImportValidationError(InvalidInputError):
    """A data file failed validation; the message names file, row and column."""

    def __init__(
        self, file: str, problem: str, row: int | None = None, column: str | None = None, unit: str = "row"
    ) -> None:
        where = [file]
        if row is not None:
            where.append(f"{unit} {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {problem}; nothing was imported")
        self.file, self.row, self.column, self.problem = file, row, column, problem


class ChecksumError(InvalidInputError):
    """A dataset file does not match its recorded SHA-256 sum."""


class StoreUnavailableError(RecsysError):
    """A backing server did not answer; the message names it and its address."""

    http_status = 503


class NotFoundError(RecsysError):
    """A user or item id the catalog does not know."""

    http_status = 404


class UnknownUserError(NotFoundError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"unknown user_id '{user_id}': the catalog has no such user; register the user first")
        self.user_id = user_id


class RateLimitedError(RecsysError):
    http_status = 429

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PayloadTooLargeError(InvalidInputError):
    """A request body over the configured limit; nothing was read past the limit or written."""

    http_status = 413


class UnauthorizedError(RecsysError):
    http_status = 401


class EventBusUnavailableError(StoreUnavailableError):
    """The event could not be published after bounded retries; the client should retry later."""

    def __init__(self, message: str, retry_after_seconds: int = 5) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

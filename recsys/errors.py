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

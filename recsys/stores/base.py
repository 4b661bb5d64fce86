"""What every store adapter shares: it holds a connection, closes it, and works as a context manager."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self


class Store(ABC):
    @abstractmethod
    def close(self) -> None:
        """Release the connection; the store is unusable after."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

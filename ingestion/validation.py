"""Typed reading of CSV and Parquet data files, with errors that name file, row and column."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.errors import ImportValidationError

Kind = Literal["string", "int", "float", "timestamp", "json", "list"]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind = "string"
    required: bool = True  # the column must be in the file
    nullable: bool = False  # its cells may be empty
    choices: tuple[str, ...] | None = None


class DataFile:
    """One CSV or Parquet file read in bounded chunks of typed, checked columns.

    Each chunk's index is the row number used in error messages: the line number for CSV
    (header = line 1), the 1-based row for Parquet.
    """

    def __init__(self, path: Path, columns: Sequence[Column], chunk_rows: int = 250_000) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.chunk_rows = chunk_rows
        self.is_parquet = self.path.suffix == ".parquet" or self.path.is_dir()
        self.unit = "row" if self.is_parquet else "line"

    def error(self, problem: str, row: int | None = None, column: str | None = None) -> ImportValidationError:
        return ImportValidationError(str(self.path), problem, row=row, column=column, unit=self.unit)

    def chunks(self) -> Iterator[pd.DataFrame]:
        if not self.path.exists():
            raise self.error("file not found")
        if self.path.is_file() and self.path.stat().st_size == 0:
            raise self.error("file is empty")
        rows = 0
        for raw in (self._parquet_chunks() if self.is_parquet else self._csv_chunks()):
            if rows == 0:
                self._check_header(list(raw.columns))
            rows += len(raw)
            yield self._convert(raw)
        if rows == 0:
            raise self.error("file has no data rows")

    def read(self) -> pd.DataFrame:
        parts = list(self.chunks())
        return pd.concat(parts) if len(parts) > 1 else parts[0]

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        try:
            reader = pd.read_csv(self.path, dtype=str, keep_default_na=False, na_values=[""],
                                 chunksize=self.chunk_rows)
            offset = 2
            for chunk in reader:
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                offset += len(chunk)
                yield chunk
        except pd.errors.EmptyDataError as exc:
            raise self.error("file is empty") from exc
        except pd.errors.ParserError as exc:
            raise self.error(f"not valid CSV: {exc}") from exc

    def _parquet_chunks(self) -> Iterator[pd.DataFrame]:
        files = sorted(self.path.glob("*.parquet")) if self.path.is_dir() else [self.path]
        offset = 1
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=self.chunk_rows):
                chunk = batch.to_pandas()
                chunk.index = pd.RangeIndex(offset, offset + len(chunk))
                offset += len(chunk)
                yield chunk

    def _check_header(self, present: list[str]) -> None:
        for column in self.columns:
            if column.required and column.name not in present:
                raise self.error(f"missing required column (found: {', '.join(present)})",
                                 row=1 if not self.is_parquet else None, column=column.name)

    def _convert(self, raw: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=raw.index)
        for column in self.columns:
            if column.name not in raw:
                continue
            values = raw[column.name]
            empty = values.isna() | (values.astype(str).str.strip() == "")
            if not column.nullable and empty.any():
                raise self.error("empty value", row=int(values.index[empty.to_numpy()][0]), column=column.name)
            out[column.name] = self._typed(column, values.where(~empty, None), empty)
        return out

    def _typed(self, column: Column, values: pd.Series, empty: pd.Series) -> pd.Series:
        kind = column.kind
        if kind == "string" or kind == "list":
            text = values.astype("string").str.strip()
            if column.choices is not None:
                bad = ~empty & ~text.isin(column.choices)
                self._fail_first(bad, values, column, f"must be one of {', '.join(column.choices)}")
            if kind == "list":
                return text.map(lambda s: [p for p in s.split("|") if p] if isinstance(s, str) else None)
            return text
        if kind in ("int", "float"):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = ~empty & numbers.isna()
            if kind == "int":
                bad |= ~empty & numbers.notna() & (numbers != np.floor(numbers.fillna(0)))
            self._fail_first(bad, values, column, f"not a valid {'integer' if kind == 'int' else 'number'}")
            return numbers.astype("Int64" if kind == "int" else "float64")
        if kind == "timestamp":
            return self._timestamps(column, values, empty)
        return self._json(column, values, empty)

    def _timestamps(self, column: Column, values: pd.Series, empty: pd.Series) -> pd.Series:
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            stamps = pd.to_datetime(values, utc=True)
        else:
            numbers = pd.to_numeric(values, errors="coerce")
            stamps = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ms, UTC]")
            numeric = numbers.notna()
            if numeric.any():
                stamps[numeric] = pd.to_datetime(numbers[numeric], unit="s", utc=True, errors="coerce")
            text = ~numeric & ~empty
            if text.any():
                stamps[text] = pd.to_datetime(values[text].astype(str), format="ISO8601", utc=True, errors="coerce")
        bad = ~empty & stamps.isna()
        self._fail_first(bad, values, column, "unparseable timestamp (use epoch seconds or ISO 8601)")
        return stamps.dt.as_unit("ms")

    def _json(self, column: Column, values: pd.Series, empty: pd.Series) -> pd.Series:
        out: list[dict[str, str] | None] = []
        for row, value, is_empty in zip(values.index, values, empty):
            if is_empty:
                out.append(None)
                continue
            try:
                parsed = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError as exc:
                raise self.error(f"not valid JSON ({exc.msg})", row=int(row), column=column.name) from exc
            if not isinstance(parsed, dict):
                raise self.error("must be a JSON object", row=int(row), column=column.name)
            out.append({str(k): str(v) for k, v in parsed.items()})
        return pd.Series(out, index=values.index, dtype=object)

    def _fail_first(self, bad: pd.Series, values: pd.Series, column: Column, problem: str) -> None:
        if bad.any():
            row = int(values.index[bad.to_numpy()][0])
            raise self.error(f"{problem}, got {values[row]!r}", row=row, column=column.name)


def require_unique(file: DataFile, frame: pd.DataFrame, column: str) -> None:
    """Fail on the first repeated key, naming the row where it repeats."""
    repeated = frame[column].duplicated()
    if repeated.any():
        row = int(frame.index[repeated.to_numpy()][0])
        raise file.error(f"duplicate id {frame.at[row, column]!r}", row=row, column=column)

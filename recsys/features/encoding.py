"""Feast's online value encoding, done a column at a time.

Feast's own materialization builds one protobuf per value and row; here numeric columns are
encoded with numpy and the rest through Feast's own converter, giving byte-identical values
(the tests compare them with Feast's output).
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
from feast import FeatureView
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from recsys.private.feast import python_values_to_proto_values, serialize_entity_key

# ValueProto field tags: double_val is field 5 (fixed64), float_val field 6 (fixed32).
_FIXED = {ValueType.DOUBLE: (b"\x29", "<f8"), ValueType.FLOAT: (b"\x35", "<f4")}


def encode_column(column: pa.Array | pa.ChunkedArray, value_type: ValueType) -> list[bytes]:
    """Serialized ValueProtos of one column; nulls (and NaN, as Feast does) become empty values."""
    if value_type in _FIXED:
        tag, dtype = _FIXED[value_type]
        values = column.to_numpy(zero_copy_only=False).astype("float64")
        missing = np.isnan(values)
        cells = np.empty(len(values), dtype=[("tag", "S1"), ("value", dtype)])
        cells["tag"], cells["value"] = tag, np.nan_to_num(values)
        raw, width = cells.tobytes(), cells.itemsize
        return [b"" if missing[i] else raw[i * width:(i + 1) * width] for i in range(len(values))]
    python = column.to_pylist()
    return [v.SerializeToString() for v in python_values_to_proto_values(python, value_type)]


def fixed_width_rows(
    table: pa.Table, columns: list[tuple[str, ValueType]], fields: list[bytes]
) -> list[bytes | None] | None:
    """Each row's `field value field value ...` RESP bulks when every column is a float type.

    One numpy record per row holds all its pairs, so a row costs one slice instead of one object per
    value. Rows with a null (an empty value has another width) are returned as None in place;
    returns None outright when some column is not fixed-width.
    """
    if not columns or any(t not in _FIXED for _, t in columns):
        return None
    layout, values = [], []
    for k, ((name, value_type), field) in enumerate(zip(columns, fields)):
        tag, dtype = _FIXED[value_type]
        width = np.dtype(dtype).itemsize + 1
        layout += [(f"f{k}", f"S{len(field)}"), (f"h{k}", "S4"), (f"t{k}", "S1"), (f"v{k}", dtype), (f"e{k}", "S2")]
        values.append((k, field, b"$%d\r\n" % width, tag, table.column(name).to_numpy(zero_copy_only=False)))
    records = np.empty(table.num_rows, dtype=np.dtype(layout))
    missing = np.zeros(table.num_rows, dtype=bool)
    for k, field, header, tag, column in values:
        column = column.astype("float64")
        missing |= np.isnan(column)
        records[f"f{k}"], records[f"h{k}"], records[f"t{k}"] = field, header, tag
        records[f"v{k}"], records[f"e{k}"] = np.nan_to_num(column), b"\r\n"
    raw, width = records.tobytes(), records.itemsize
    return [None if missing[i] else raw[i * width:(i + 1) * width] for i in range(table.num_rows)]


def entity_keys(view: FeatureView, table: pa.Table, version: int) -> list[bytes]:
    """Serialized entity keys of each row, without the project suffix."""
    columns = view.entity_columns
    if version == 3 and len(columns) == 1 and columns[0].dtype.to_value_type() == ValueType.STRING:
        # One string key: Feast's layout is a constant prefix, then the value's length and bytes.
        name = columns[0].name.encode("utf-8")
        string = ValueType.STRING.value
        prefix = struct.pack("<III", 1, string, len(name)) + name + struct.pack("<I", string)
        raw = [v.encode("utf-8") for v in table.column(columns[0].name).to_pylist()]
        return [prefix + struct.pack("<I", len(v)) + v for v in raw]
    join_keys = [column.name for column in view.entity_columns]
    values = {
        k: python_values_to_proto_values(table.column(k).to_pylist(), column.dtype.to_value_type())
        for k, column in zip(join_keys, view.entity_columns)
    }
    return [
        serialize_entity_key(
            EntityKeyProto(join_keys=join_keys, entity_values=[values[k][i] for k in join_keys]),
            entity_key_serialization_version=version,
        )
        for i in range(table.num_rows)
    ]


def timestamps(column: pa.Array | pa.ChunkedArray) -> list[bytes]:
    """Serialized protobuf Timestamps, as Feast stores the event time of each row."""
    micros = column.cast(pa.timestamp("us", tz="UTC")).to_numpy(zero_copy_only=False).astype("int64")
    seconds, rest = np.divmod(micros, 1_000_000)
    return [
        Timestamp(seconds=int(s), nanos=int(r) * 1000).SerializeToString() for s, r in zip(seconds, rest)
    ]

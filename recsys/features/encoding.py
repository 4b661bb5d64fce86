"""Feast's online value encoding, done a column at a time.

Feast's own materialization builds one protobuf per value and row; here numeric columns are
encoded with numpy and the rest through Feast's own converter, giving byte-identical values
(the tests compare them with Feast's output).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from feast import FeatureView
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

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


def entity_keys(view: FeatureView, table: pa.Table, version: int) -> list[bytes]:
    """Serialized entity keys of each row, without the project suffix."""
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

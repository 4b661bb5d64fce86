"""Column-at-a-time encodings equal Feast's own, value for value."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.types import Float64, String

from recsys.features.encoding import encode_column, entity_keys, fixed_width_rows
from recsys.features.resp import bulk

VALUES = [1.5, None, float("nan"), -0.0, 1e300, 3.0]


def test_float_columns_encode_like_feast() -> None:
    for value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        theirs = [v.SerializeToString() for v in python_values_to_proto_values(VALUES, value_type)]
        if value_type == ValueType.FLOAT:
            theirs = [v.SerializeToString() for v in python_values_to_proto_values(
                [None if v is None else float(np.float32(v)) for v in VALUES[:4]], value_type)]
            assert encode_column(pa.array(VALUES[:4], pa.float32()), value_type) == theirs
        else:
            assert encode_column(pa.array(VALUES, pa.float64()), value_type) == theirs


def test_fixed_width_rows_equal_the_value_by_value_packing() -> None:
    table = pa.table({"a": pa.array([1.0, 2.5, None, 4.0]),
                      "b": pa.array([0.5, 1.0, 2.0, float("nan")], pa.float32())})
    columns = [("a", ValueType.DOUBLE), ("b", ValueType.FLOAT)]
    fields = [bulk(b"\x01\x02\x03\x04"), bulk(b"\x05\x06\x07\x08")]
    rows = fixed_width_rows(table, columns, fields)
    assert rows is not None
    encoded = [[bulk(v) for v in encode_column(table.column(n), t)] for n, t in columns]
    for row in (0, 1):
        assert rows[row] == fields[0] + encoded[0][row] + fields[1] + encoded[1][row]
    assert rows[2] is None and rows[3] is None  # nulls and NaN take the value-by-value path
    assert fixed_width_rows(table, [("a", ValueType.STRING)], fields[:1]) is None


def test_string_entity_keys_equal_feasts_serialization() -> None:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    view = FeatureView(name="v", entities=[user], source=FileSource(path="x.parquet", timestamp_field="ts"),
                       schema=[Field(name="user_id", dtype=String), Field(name="x", dtype=Float64)])
    ids = ["u1", "ü-ß", ""]
    ours = entity_keys(view, pa.table({"user_id": ids}), version=3)
    theirs = [serialize_entity_key(EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(string_val=i)]),
                                   entity_key_serialization_version=3) for i in ids]
    assert ours == theirs

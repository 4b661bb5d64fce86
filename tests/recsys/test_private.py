"""The library internals in `recsys.private` still behave as the code relies on; an upgrade that changes one
fails here, by name, before anything is served or materialized with it."""

from __future__ import annotations

import inspect
import struct
from datetime import UTC, datetime
from pathlib import Path

import bentoml
import mmh3 as murmur
import pyarrow as pa
from feast import Entity, FeatureView, Field, FileSource
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Float32, Int64
from feast.value_type import ValueType

from recsys.private import bentoml as private_bentoml
from recsys.private import feast as private_feast


def test_bentoml_model_store_under_a_home_of_our_own(tmp_path: Path) -> None:
    store = private_bentoml.model_store(tmp_path)
    with bentoml.models.create("probe:v1", module=__name__, _model_store=store) as model:
        Path(model.path_of("weights.bin")).write_bytes(b"\x01\x02")
    found = bentoml.models.get("probe:latest", _model_store=store)
    assert str(found.tag) == "probe:v1"
    assert Path(found.path_of("weights.bin")).read_bytes() == b"\x01\x02"
    assert (tmp_path / "models" / "probe" / "v1").is_dir()


def test_bentoml_timeout_middleware_has_what_hosting_overrides() -> None:
    middleware = private_bentoml.traffic.TimeoutMiddleware
    assert list(inspect.signature(middleware.__init__).parameters) == ["self", "app", "timeout"]
    assert callable(middleware._set_timer_out)
    instance = middleware(app=lambda *a: None, timeout=1.5)
    assert instance.timeout == 1.5 and instance.app is not None


def test_feast_field_hash_is_little_endian_murmur3() -> None:
    for key in ("item_features:popularity", "user_features:n_ratings", ""):
        expected = struct.pack("<Q", murmur.hash(key, signed=False))[:4]
        assert private_feast.mmh3(key) == expected


def test_feast_arrow_to_proto_rows() -> None:
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    source = FileSource(path="unused.parquet", timestamp_field="event_timestamp")
    view = FeatureView(name="probe", entities=[item], schema=[Field(name="item_id", dtype=Int64),
                                                               Field(name="score", dtype=Float32)], source=source)
    when = datetime(2024, 1, 2, tzinfo=UTC)
    table = pa.table({"item_id": [7, 8], "score": pa.array([0.5, 1.5], pa.float32()),
                      "event_timestamp": [when, when]})
    rows = private_feast.convert_arrow_to_proto(table, view, {"item_id": ValueType.INT64})
    assert len(rows) == 2
    key, values, stamp, _created = rows[0]
    assert key.join_keys == ["item_id"] and key.entity_values[0].int64_val == 7
    assert values["score"].float_val == 0.5
    assert stamp.replace(tzinfo=UTC) == when


def test_feast_value_codecs_round_trip() -> None:
    protos = private_feast.python_values_to_proto_values([1.25, 2.5], ValueType.DOUBLE)
    assert [private_feast.feast_value_type_to_python_type(p) for p in protos] == [1.25, 2.5]
    key = EntityKeyProto(join_keys=["user_id"], entity_values=[ValueProto(string_val="u1")])
    serialized = private_feast.serialize_entity_key(key, entity_key_serialization_version=3)
    assert b"user_id" in serialized and b"u1" in serialized

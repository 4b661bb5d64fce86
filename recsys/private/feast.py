"""Feast 0.67 helpers the fast paths use, some private, all undocumented.

Feast's Redis online store hashes field names with `_mmh3` and converts Arrow batches with
`_convert_arrow_to_proto`; our bulk materialization writes exactly what Feast writes, so it must use the same
two. The value and key encoders (`python_values_to_proto_values`, `serialize_entity_key`,
`feast_value_type_to_python_type`, `feast_value_type_to_pa`) are public modules but not documented API.
"""

from __future__ import annotations

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3 as mmh3
from feast.type_map import feast_value_type_to_pa, feast_value_type_to_python_type, python_values_to_proto_values
from feast.utils import _convert_arrow_to_proto as convert_arrow_to_proto

__all__ = [
    "convert_arrow_to_proto", "feast_value_type_to_pa", "feast_value_type_to_python_type", "mmh3",
    "python_values_to_proto_values", "serialize_entity_key",
]

"""The fast online read path for ranking: one user row and up to ~1,000 candidate items per request.

Feast's `get_online_features` builds protobufs per entity and feature on every call (hundreds of
milliseconds for 1,000 rows). Here item rows live in an in-process table, refreshed from the online
store, and each request does one read per user view plus array lookups. The answer has exactly the
layout and values of `get_online_features(features=service, full_feature_names=True).to_dict()`
(a test proves it), plus a status per value: present, missing or stale beyond the view's TTL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView
from feast.infra.offline_stores.file_source import FileSource
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from recsys.features.on_demand import TWINS, epoch_column
from recsys.features.service import (
    EVENT_DRIVEN_TAG,
    MISSING,
    PRESENT,
    STALE,
    ServiceLayout,
    check_entity_rows,
    service_layout,
)
from recsys.private.feast import feast_value_type_to_python_type

READ_BATCH = 1_000
#: Feature values in `OnlineResponse.to_dict()` layout, and a status per value.
Answer = tuple[dict[str, list[Any]], dict[str, list[str]]]


@dataclass
class ViewTable:
    """Decoded rows of one view: a column per feature (Python values), event times, and a key index."""

    view: FeatureView
    features: list[str]
    index: dict[str, int] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    timestamps: np.ndarray = field(default_factory=lambda: np.empty(0, dtype="float64"))

    #: Timestamp columns as epoch nanoseconds (masked where absent), for the on-demand twins.
    epochs: dict[str, np.ma.MaskedArray] = field(default_factory=dict)

    def take(self, keys: list[str], epochs: dict[str, Any] | None = None) -> tuple[dict[str, list[Any]], np.ndarray]:
        """Values and event times (epoch seconds; NaN when absent) of these keys, in order; with `epochs`, also
        the timestamp columns' epoch nanoseconds."""
        missing_row = len(self.timestamps) - 1  # the last row is all None
        rows = np.fromiter((self.index.get(k, missing_row) for k in keys), dtype=np.int64, count=len(keys))
        if epochs is not None:
            epochs.update({name: column.take(rows) for name, column in self.epochs.items()})
        return {name: column.take(rows).tolist() for name, column in self.columns.items()}, self.timestamps[rows]


class FastOnlineFeatures:
    """`get_online_features` for one feature service, answered from memory for the item side."""

    def __init__(self, store: FeatureStore, service: str, max_age_seconds: float = 300.0, twins: bool = True) -> None:
        self.store = store
        self.twins = twins
        self.layout: ServiceLayout = service_layout(store, service)
        self.max_age_seconds = max_age_seconds
        self._provider = store._get_provider()
        self._needed = _needed_features(store, self.layout)
        self._projected = {view.name: names for view, names in self.layout.views}
        self._item_tables: dict[str, ViewTable] = {}
        self._refreshed_at = float("-inf")

    # -- the in-process tables ----------------------------------------------------------------------
    def refresh(self, keys: list[str] | None = None) -> int:
        """Reload every non-user view from the online store; returns rows loaded."""
        loaded = 0
        for view, names in self._needed:
            if self._is_user_view(view):
                continue
            ids = keys if keys is not None else _known_keys(self.store, view)
            self._item_tables[view.name] = self._read(view, names, ids)
            loaded += len(ids)
        self._refreshed_at = time.monotonic()
        return loaded

    def stale_views(self, now: float) -> list[str]:
        """The item views whose newest row is past the view's TTL at `now` (epoch seconds), or that hold no row:
        an online store that stopped being refreshed. A single old item, or a user with no recent row, is not
        that: their values take typed defaults, as in a point-in-time training row."""
        stale = []
        for name, table in self._item_tables.items():
            ttl = table.view.ttl.total_seconds() if table.view.ttl else None
            if (table.view.tags or {}).get(EVENT_DRIVEN_TAG) == "true" or ttl is None:
                continue
            known = table.timestamps[np.isfinite(table.timestamps)]
            if not len(known) or now - float(known.max()) > ttl:
                stale.append(name)
        return stale

    def _is_user_view(self, view: FeatureView) -> bool:
        return [c.name for c in view.entity_columns] == ["user_id"]

    def _read(self, view: FeatureView, names: list[str], keys: list[str]) -> ViewTable:
        join_key = view.entity_columns[0]
        table = ViewTable(view, names, index={k: i for i, k in enumerate(keys)})
        raw: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
        for start in range(0, len(keys), READ_BATCH):
            entity_keys = [
                EntityKeyProto(join_keys=[join_key.name], entity_values=[ValueProto(string_val=k)])
                for k in keys[start:start + READ_BATCH]
            ]
            raw += self._provider.online_read(self.store.config, view, entity_keys, names)
        raw.append((None, None))  # the row every unknown key points to
        for name in names:
            column = np.empty(len(raw), dtype=object)
            column[:] = [_decode(values, name) for _, values in raw]
            table.columns[name] = column
            if any(isinstance(v, datetime) for v in column[:-1]):
                table.epochs[name] = epoch_column(column.tolist())
        table.timestamps = np.array([ts.timestamp() if ts else np.nan for ts, _ in raw], dtype="float64")
        return table

    def _read_one(self, view: FeatureView, names: list[str], key: str) -> tuple[dict[str, list[Any]], np.ndarray]:
        """One entity's row straight from the online store: a single read, no table."""
        entity_key = EntityKeyProto(join_keys=[view.entity_columns[0].name], entity_values=[ValueProto(string_val=key)])
        ((stamp, values),) = self._provider.online_read(self.store.config, view, [entity_key], names)
        columns = {name: [_decode(values, name)] for name in names}
        return columns, np.array([stamp.timestamp() if stamp else np.nan])

    # -- requests --------------------------------------------------------------------------------------
    def get(
        self, user_id: str, item_ids: list[str], request: dict[str, Any] | None = None
    ) -> Answer:
        """Feature values (to_dict layout) and a status per value for one user and many items."""
        request = request or {}
        check_entity_rows(self.layout, [{"user_id": user_id, "item_id": "", **request}])
        now = pd.Timestamp(request.get("request_time") or pd.Timestamp.now(tz="UTC")).timestamp()
        user_values, user_status, user_inputs = self._side(user_id, None, now)
        epochs: dict[str, Any] = {}
        item_values, item_status, item_inputs = self._side(None, item_ids, now, epochs)
        n = len(item_ids)
        values = {"user_id": [user_id] * n, "item_id": list(item_ids)}
        values.update({k: v * n for k, v in user_values.items()})
        values.update(item_values)
        status = {k: v * n for k, v in user_status.items()}
        status.update(item_status)
        self._on_demand(user_inputs, item_inputs, epochs, request, n, values, status)
        return values, status

    def user_features(self, user_id: str, now: float | None = None) -> Answer:
        """The user's row of every user view the service reads: one online-store read per view."""
        values, status, _ = self._side(user_id, None, now if now is not None else time.time())
        return values, status

    def item_features(self, item_ids: list[str], now: float | None = None) -> Answer:
        """Rows of the item views for these items, from the in-process tables."""
        values, status, _ = self._side(None, item_ids, now if now is not None else time.time())
        return values, status

    def _side(
        self, user_id: str | None, item_ids: list[str] | None, now: float, epochs: dict[str, Any] | None = None,
    ) -> tuple[dict[str, list[Any]], dict[str, list[str]], dict[str, list[Any]]]:
        if item_ids is not None and time.monotonic() - self._refreshed_at > self.max_age_seconds:
            self.refresh()
        values: dict[str, list[Any]] = {}
        status: dict[str, list[str]] = {}
        inputs: dict[str, list[Any]] = {}
        for view, names in self._needed:
            if self._is_user_view(view) != (user_id is not None):
                continue
            if user_id is not None:
                columns, stamps = self._read_one(view, names, user_id)
            else:
                columns, stamps = self._item_tables[view.name].take(item_ids or [], epochs)
            inputs.update(columns)
            self._collect(view, columns, stamps, now, values, status)
        return values, status, inputs

    def _collect(
        self, view: FeatureView, columns: dict[str, list[Any]], stamps: np.ndarray, now: float,
        values: dict[str, list[Any]], status: dict[str, list[str]],
    ) -> None:
        projected = self._projected.get(view.name, [])
        ttl = view.ttl.total_seconds() if view.ttl else None
        stale = (now - stamps > ttl) if ttl else np.zeros(len(stamps), dtype=bool)
        any_stale = bool(stale.any())
        stale_list = stale.tolist() if any_stale else None
        for name in projected:
            column = columns[name]
            values[f"{view.name}__{name}"] = column
            if stale_list is None and None not in column:  # the common case, at C speed
                status[f"{view.name}__{name}"] = [PRESENT] * len(column)
                continue
            flags = stale_list if stale_list is not None else [False] * len(column)
            status[f"{view.name}__{name}"] = [
                MISSING if v is None else STALE if s else PRESENT for v, s in zip(column, flags)
            ]

    def _on_demand(
        self, user_inputs: dict[str, list[Any]], item_inputs: dict[str, list[Any]], epochs: dict[str, Any],
        request: dict[str, Any], n: int, values: dict[str, list[Any]], status: dict[str, list[str]],
    ) -> None:
        """Each on-demand view's values: its request-time twin (`recsys.features.on_demand.TWINS`) when it
        has one and `twins` is on, else its own pandas function (a view reading only the request: one row)."""
        for odfv in self.layout.on_demand:
            wanted = next(p for p in self.layout.service.feature_view_projections if p.name == odfv.name)
            twin = TWINS.get(odfv.name) if self.twins else None
            if twin is not None:
                output = twin(request, {k: v[0] for k, v in user_inputs.items()}, {**item_inputs, **epochs}, n)
                columns = {f.name: output[f.name] if isinstance(output[f.name], list) else [output[f.name]] * n
                           for f in wanted.features}
            else:
                columns = self._run_function(odfv, user_inputs, item_inputs, request, n, wanted.features)
            for name, column in columns.items():
                values[f"{odfv.name}__{name}"] = column
                status[f"{odfv.name}__{name}"] = [MISSING if v is None else PRESENT for v in column] \
                    if None in column else [PRESENT] * n

    def _run_function(self, odfv: Any, user_inputs: dict[str, list[Any]], item_inputs: dict[str, list[Any]],
                      request: dict[str, Any], n: int, features: list[Any]) -> dict[str, list[Any]]:
        """The view's own function over a frame of the request's rows (what Feast runs)."""
        transformation = odfv.feature_transformation
        assert transformation is not None, f"{odfv.name} has no transformation"
        reads_views = bool(odfv.source_feature_view_projections)
        rows = n if reads_views else 1
        inputs = {**{k: v * n for k, v in user_inputs.items()}, **item_inputs}
        columns = {k: [v] * rows for k, v in request.items()}
        for projection in odfv.source_feature_view_projections.values():
            columns.update({f.name: inputs[f.name] for f in projection.features})
        output = transformation.udf(pd.DataFrame(columns))
        out: dict[str, list[Any]] = {}
        for feature in features:
            column = _python_column(output[feature.name])
            out[feature.name] = column * n if not reads_views else column
        return out


def _needed_features(store: FeatureStore, layout: ServiceLayout) -> list[tuple[FeatureView, list[str]]]:
    """Each view with the features the service projects plus those its on-demand views read."""
    needed = {view.name: (view, list(names)) for view, names in layout.views}
    for odfv in layout.on_demand:
        for projection in odfv.source_feature_view_projections.values():
            view, names = needed.get(projection.name, (store.get_feature_view(projection.name), []))
            names += [f.name for f in projection.features if f.name not in names]
            needed[projection.name] = (view, names)
    return list(needed.values())


def _known_keys(store: FeatureStore, view: FeatureView) -> list[str]:
    """Every entity the view's feature table has rows for."""
    source = view.batch_source
    assert isinstance(source, FileSource)
    key = view.entity_columns[0].name
    path = FileSource.get_uri_for_file_path(store.repo_path, source.path)
    column = ds.dataset(path, format="parquet").to_table(columns=[key]).column(key)
    return sorted(set(column.to_pylist()))


def _decode(values: dict[str, ValueProto] | None, name: str) -> Any:
    if values is None or name not in values:
        return None
    return feast_value_type_to_python_type(values[name])


def _python_column(series: pd.Series) -> list[Any]:
    """`_python` over a column; float columns take the vectorised path (NaN becomes None)."""
    if series.dtype.kind == "f":
        return [None if v != v else v for v in series.to_numpy().tolist()]
    if series.dtype.kind in "iub":
        return series.to_numpy().tolist()
    return [_python(v) for v in series.tolist()]


def _python(value: Any) -> Any:
    """What a value becomes after Feast's protobuf round trip: NaN is None, numpy scalars are Python."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return None if isinstance(value, np.floating) and np.isnan(value) else value.item()
    return value

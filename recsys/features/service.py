"""A feature service as the rest of the platform sees it: its views, fields, typed defaults and TTLs.

Defaults are read from the Feast definitions (a field's `default` tag; `default.<name>` tags on
on-demand views), so feature_repo/ stays the only list of features. Both training and serving
fill missing values through `fill_defaults`, and report a status per value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView
from feast.errors import FeatureServiceNotFoundException
from feast.value_type import ValueType

from recsys.errors import InvalidInputError, RecsysError

PRESENT, MISSING, STALE = "present", "missing", "stale"


#: The feature service new rankers train on (the ranker's model records the one it was trained on, and
#: serving assembles that one): version 1 and the `user_realtime` signals.
RANKER_SERVICE = "ranker_v2"


class UnknownFeatureServiceError(RecsysError):
    http_status = 404


@dataclass(frozen=True)
class FeatureSpec:
    view: str
    name: str
    value_type: ValueType
    default: Any
    ttl: timedelta | None  # None for on-demand features and views without TTL

    @property
    def ref(self) -> str:
        """The column name with full feature names: view__feature."""
        return f"{self.view}__{self.name}"


@dataclass(frozen=True)
class ServiceLayout:
    service: FeatureService
    views: list[tuple[FeatureView, list[str]]]  # materialized views and the features the service takes
    on_demand: list[OnDemandFeatureView]
    specs: list[FeatureSpec]
    join_keys: list[str]
    request_fields: list[str]


def service_layout(store: FeatureStore, name: str) -> ServiceLayout:
    try:
        service = store.get_feature_service(name)
    except FeatureServiceNotFoundException as exc:
        known = ", ".join(sorted(s.name for s in store.list_feature_services()))
        raise UnknownFeatureServiceError(f"unknown feature service '{name}' (known: {known})") from exc
    views, on_demand, specs = [], [], []
    join_keys: list[str] = []
    request_fields: list[str] = []
    for projection in service.feature_view_projections:
        names = [f.name for f in projection.features]
        try:
            view = store.get_feature_view(projection.name)
        except Exception:  # noqa: BLE001 - not a materialized view: look it up as on-demand
            odfv = store.get_on_demand_feature_view(projection.name)
            on_demand.append(odfv)
            for source in odfv.source_request_sources.values():
                request_fields += [f.name for f in source.schema if f.name not in request_fields]
            specs += [_spec(odfv.name, f, odfv.tags.get(f"default.{f.name}"), None) for f in odfv.features
                      if f.name in names]
            continue
        views.append((view, names))
        join_keys += [c.name for c in view.entity_columns if c.name not in join_keys]
        specs += [_spec(view.name, f, (f.tags or {}).get("default"), view.ttl or None) for f in view.features
                  if f.name in names]
    return ServiceLayout(service, views, on_demand, specs, join_keys, request_fields)


def _spec(view: str, field: Any, default: str | None, ttl: timedelta | None) -> FeatureSpec:
    value_type = field.dtype.to_value_type()
    return FeatureSpec(view, field.name, value_type, parse_default(default, value_type), ttl)


def parse_default(text: str | None, value_type: ValueType) -> Any:
    """The typed default of a field: its tag when given, else the type's empty value."""
    name = value_type.name
    if name.endswith("_LIST"):
        return []
    if name in ("INT32", "INT64"):
        return int(text) if text is not None else 0
    if name in ("FLOAT", "DOUBLE"):
        return float(text) if text is not None else 0.0
    if name == "BOOL":
        return text is not None and text.lower() == "true"
    if name == "STRING":
        return text if text is not None else ""
    return None  # timestamps and bytes have no sensible default: they stay missing


def check_entity_rows(layout: ServiceLayout, rows: list[dict[str, Any]]) -> None:
    """Every row must carry the service's join keys and request fields, and nothing unknown."""
    needed = set(layout.join_keys) | set(layout.request_fields)
    for index, row in enumerate(rows):
        missing, unknown = needed - row.keys(), row.keys() - needed
        if missing or unknown:
            raise InvalidInputError(
                f"feature service '{layout.service.name}' needs {sorted(needed)}; row {index} "
                + (f"lacks {sorted(missing)}" if missing else "") + (" and " if missing and unknown else "")
                + (f"has unknown {sorted(unknown)}" if unknown else "")
            )


#: A view tagged so holds a row only while there is something to say (`user_realtime`: a user with no event
#: in the last day has none, and its defaults, zeros, are the truth): its absence is not staleness.
EVENT_DRIVEN_TAG = "event_driven"


def fresh_share(status: dict[str, list[str]], layout: ServiceLayout) -> float:
    """The share of the stored feature values (materialized views; on-demand ones are computed; event-driven
    ones are left out) that are present: neither missing nor past their view's TTL. 1.0 when the service
    reads no such view."""
    stored = {view.name for view, _ in layout.views if (view.tags or {}).get(EVENT_DRIVEN_TAG) != "true"}
    total = present = 0
    for spec in layout.specs:  # per request on the serving path: list.count, no per-value Python loop
        if spec.view in stored:
            column = status.get(spec.ref, [])
            total, present = total + len(column), present + column.count(PRESENT)
    return present / total if total else 1.0


def fill_defaults(
    values: dict[str, list[Any]], status: dict[str, list[str]], specs: list[FeatureSpec]
) -> dict[str, list[Any]]:
    """Replace missing and stale values by their typed defaults; the statuses say which were."""
    filled = dict(values)
    for spec in specs:
        column, states = values[spec.ref], status[spec.ref]
        if states.count(PRESENT) != len(states):  # else nothing to fill: keep the column as it is
            filled[spec.ref] = [v if s == PRESENT else spec.default for v, s in zip(column, states)]
    return filled

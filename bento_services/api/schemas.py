"""The HTTP API's bodies and answers: pydantic models whose JSON schema is the OpenAPI document.

Inputs forbid unknown fields and say exactly what is wrong; outputs mirror
`bento_services.pipeline.contracts`. Events leave the API as JSON payloads (`to_payload`) on the one topic
`interaction-events`, tagged by ``kind`` (``interaction`` or ``feedback``), keyed by ``user_id``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from bento_services.pipeline.contracts import Degradation
from recsys.events import ACTION_TYPES, new_event_id
from recsys.streaming.decode import SCHEMA_VERSION

#: How far ahead of the server's clock an event_time may lie (client clock skew).
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_ID_LENGTH = 128


def _known_action(action: str) -> str:
    if action not in ACTION_TYPES:
        raise ValueError(f"unknown action_type '{action}'; expected one of {', '.join(ACTION_TYPES)}")
    return action


def _not_in_future(moment: datetime | None) -> datetime:
    """Naive times are UTC; times past now + MAX_CLOCK_SKEW are rejected; missing means now."""
    now = datetime.now(UTC)
    if moment is None:
        return now
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment > now + MAX_CLOCK_SKEW:
        raise ValueError(f"event_time {moment.isoformat()} is in the future (server time {now.isoformat()})")
    return moment


def _trimmed(value: str) -> str:
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_trimmed)]
ActionType = Annotated[
    str, AfterValidator(_known_action), WithJsonSchema({"type": "string", "enum": list(ACTION_TYPES)}),
]
EventTime = Annotated[
    datetime | None,
    AfterValidator(_not_in_future),
    Field(validate_default=True,
          description="ISO 8601; naive times are UTC; default now; at most 5 minutes ahead of the server"),
]
EventId = Annotated[
    str, Field(default_factory=new_event_id, min_length=1, max_length=64,
               description="idempotency key: resending an event with the same id writes it once"),
]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class InteractionIn(_Input):
    """One implicit or explicit interaction of a user with an item."""

    user_id: Id
    item_id: Id
    action_type: ActionType
    event_time: EventTime = None
    value: float | None = Field(None, description="numeric value of the action, e.g. a rating or a dwell time")
    session_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)] | None = None
    context: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] | None = Field(
        None, max_length=32, description="string -> string request context (device, page, ...)")
    event_id: EventId

    def to_payload(self) -> dict[str, Any]:
        assert self.event_time is not None  # filled in by the validator
        return {
            "kind": "interaction", "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
            "event_time": _iso(self.event_time), "action_type": self.action_type, "value": self.value,
            "session_id": self.session_id, "context": self.context or {},
        }


class FeedbackIn(_Input):
    """Explicit feedback: a rating (value 0.5..5 required), not interested (excludes the item), a report."""

    user_id: Id
    item_id: Id
    kind: Literal["rating", "not_interested", "report"]
    value: float | None = Field(None, ge=0.5, le=5.0, description="the rating; required for kind=rating only")
    reason: Annotated[str, Field(max_length=500)] | None = None
    event_time: EventTime = None
    event_id: EventId

    @model_validator(mode="after")
    def _value_only_for_ratings(self) -> FeedbackIn:
        if self.kind == "rating" and self.value is None:
            raise ValueError("value is required for kind=rating (0.5 to 5)")
        if self.kind != "rating" and self.value is not None:
            raise ValueError(f"value is only allowed for kind=rating, not kind={self.kind}")
        return self

    def to_payload(self) -> dict[str, Any]:
        assert self.event_time is not None
        return {
            "kind": "feedback", "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
            "event_time": _iso(self.event_time), "feedback": self.kind, "value": self.value, "reason": self.reason,
        }


class Accepted(BaseModel):
    event_id: str


class ItemOut(BaseModel):
    item_id: str
    rank: int = Field(description="1-based")
    score: float
    source: str = Field(description="candidate source that contributed most: collaborative, content, popularity, ...")
    explanation: str = Field(description="explanation type: similar_users, similar_items, popular_in_category, ...")


class RecommendationsOut(BaseModel):
    user_id: str
    items: list[ItemOut]
    variant: str = Field(description="experiment variant, also in the X-Experiment header")
    model_version: str
    degradation: Degradation = Field(description="the rung of the degradation ladder the answer came from")
    cached: bool = Field(description="answered from the precomputed layer")


class FieldError(BaseModel):
    field: str = Field(description="where: query.n, body.action_type, ...")
    reason: str


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable error kind, e.g. unknown_user, invalid_request")
    detail: str | list[FieldError]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]

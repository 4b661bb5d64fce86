"""The HTTP API's bodies and answers: pydantic models whose JSON schema is the OpenAPI document.

Inputs forbid unknown fields and say exactly what is wrong; outputs mirror
`bento_services.pipeline.contracts` (and, for `/users`, the catalog's user row). Events leave the API as
JSON payloads (`to_payload`) on the one topic `interaction-events`, tagged by ``kind`` (``interaction`` or
``feedback``), keyed by ``user_id``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StrictBool,
    WithJsonSchema,
    model_validator,
)

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

#: Onboarding categories: as many as a profile keeps, each as long as the catalog's `items.category`.
MAX_CATEGORIES = 20
MAX_CATEGORY_LENGTH = 100
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?", re.IGNORECASE)
_COUNTRY = re.compile(r"[a-z]{2,3}", re.IGNORECASE)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must not hold control characters")
    return value


def _distinct(values: list[str] | None) -> list[str] | None:
    return None if values is None else list(dict.fromkeys(values))


def _language(value: str) -> str:
    """A BCP 47 language code: `fr`, `pt-BR`, `zh-hant`; the language lower case, a region upper case."""
    if not _LANGUAGE.fullmatch(value):
        raise ValueError(f"{value!r} is not a language code such as 'en', 'fr' or 'pt-BR'")
    language, _, rest = value.partition("-")
    return f"{language.lower()}-{rest.upper() if len(rest) == 2 else rest.lower()}" if rest else language.lower()


def _country(value: str) -> str:
    if not _COUNTRY.fullmatch(value):
        raise ValueError(f"{value!r} is not an ISO 3166 country code such as 'US' or 'FR'")
    return value.upper()


Category = Annotated[str, Field(min_length=1, max_length=MAX_CATEGORY_LENGTH), AfterValidator(_trimmed),
                     AfterValidator(_printable)]
Language = Annotated[str, Field(max_length=10), AfterValidator(_language),
                     WithJsonSchema({"type": "string", "maxLength": 10, "examples": ["en", "pt-BR"]})]
Country = Annotated[str, AfterValidator(_country),
                    WithJsonSchema({"type": "string", "minLength": 2, "maxLength": 3, "examples": ["US", "FR"]})]
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


RequestId = Annotated[
    str | None,
    Field(None, min_length=1, max_length=64, description="the `request_id` of the answer that showed the item: "
          "attributes this event to that impression (CTR, experiments); optional"),
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
    request_id: RequestId = None

    def to_payload(self) -> dict[str, Any]:
        assert self.event_time is not None  # filled in by the validator
        return {
            "kind": "interaction", "schema_version": SCHEMA_VERSION,
            "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
            "event_time": _iso(self.event_time), "action_type": self.action_type, "value": self.value,
            "session_id": self.session_id, "context": self.context or {}, "request_id": self.request_id,
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
    request_id: RequestId = None

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
            "request_id": self.request_id,
        }


class UserIn(_Input):
    """A user's onboarding answers or a profile update: created when new, updated otherwise (an upsert).

    A field left out (or null) keeps what is stored; an empty `preferred_categories` clears them.
    """

    user_id: Id
    preferred_categories: Annotated[list[Category] | None, AfterValidator(_distinct)] = Field(
        None, max_length=MAX_CATEGORIES,
        description="categories as the catalog's items name them (`category`); a new user's first answers "
                    "are their most popular items")
    language: Language | None = Field(None, description="BCP 47 language code: en, fr, pt-BR")
    country: Country | None = Field(None, description="ISO 3166-1 country code: US, FR")


class UserOut(BaseModel):
    """The profile as the catalog stores it."""

    user_id: str
    preferred_categories: list[str]
    language: str | None
    country: str | None
    onboarding_completed: bool
    created_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> UserOut:
        return cls(user_id=row["user_id"], preferred_categories=list(row.get("preferred_categories") or []),
                   language=row.get("language"), country=row.get("country"),
                   onboarding_completed=bool(row.get("onboarding_completed")), created_at=row.get("created_at"))


#: Catalog limits, as the items table has them (PostgreSQL column sizes).
MAX_ITEM_ID_LENGTH = 50
MAX_TITLE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 10_000
MAX_TAGS = 50
MAX_CONTENT_FEATURES = 64
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ITEM_ID_LENGTH), AfterValidator(_trimmed)]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE_LENGTH), AfterValidator(_trimmed),
                  AfterValidator(_printable)]


class ItemIn(_Input):
    """One catalog item, posted by an admin: created when new (`title` required then), updated otherwise (an
    upsert). A field left out (or null) keeps what is stored; an empty `tags` clears them. Serving places a
    new item from its tags and category within `serving.new_items_poll_seconds`, without retraining."""

    item_id: ItemId
    title: Title | None = Field(None, description="required when the item is new")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] | None = None
    category: Category | None = Field(None, description="as the catalog's other items name theirs")
    subcategory: Category | None = None
    tags: Annotated[list[Category] | None, AfterValidator(_distinct)] = Field(
        None, max_length=MAX_TAGS, description="what places a new item: near the items that share its tags")
    content_features: dict[Annotated[str, Field(min_length=1, max_length=64)], JsonValue] | None = Field(
        None, max_length=MAX_CONTENT_FEATURES, description="a JSON object: year, genres, ids, ...")
    is_active: StrictBool | None = Field(None, description="false withdraws the item from every answer")


class CatalogItemOut(BaseModel):
    """The item as the catalog stores it."""

    item_id: str
    title: str
    description: str | None
    category: str | None
    subcategory: str | None
    tags: list[str]
    content_features: dict[str, Any]
    is_active: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CatalogItemOut:
        return cls(item_id=row["item_id"], title=row["title"], description=row.get("description"),
                   category=row.get("category"), subcategory=row.get("subcategory"),
                   tags=list(row.get("tags") or []), content_features=dict(row.get("content_features") or {}),
                   is_active=bool(row.get("is_active", True)), created_at=row.get("created_at"),
                   updated_at=row.get("updated_at"))


class Accepted(BaseModel):
    event_id: str


class ItemOut(BaseModel):
    item_id: str
    rank: int = Field(description="1-based")
    score: float
    source: str = Field(description="candidate source that contributed most: collaborative, content, popularity, ...")
    explanation: str = Field(description="explanation type: similar_users, similar_items, popular_in_category, ...")


class RecommendationsOut(BaseModel):
    request_id: str = Field(description="this answer's id, also in the X-Request-Id header: send it back on "
                            "POST /interactions and /feedback about its items")
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


class ConsumersOut(BaseModel):
    lag: dict[str, int] | None = Field(description="events each consumer group has not committed; null: unknown")
    threshold: int
    within_threshold: bool | None


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, bool]
    consumers: ConsumersOut | None = Field(None, description="the streaming consumers' lag (services profile); "
                                                              "reported, not a condition of readiness")

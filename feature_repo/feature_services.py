"""Feature services: the one contract between features, training and serving."""

from feast import FeatureService

from features import item_cooccurrence, item_features, user_features, user_realtime
from on_demand import request_features, user_item_features

V1_FEATURES = [
    user_features[[
        "interactions_total", "interactions_7d", "interactions_30d", "avg_rating_given",
        "sessions_per_week", "avg_session_minutes", "preferred_hour", "engagement_level",
    ]],
    item_features[[
        "category", "interactions_total", "interactions_7d", "interactions_30d", "rating_count",
        "avg_rating", "click_rate", "purchase_rate", "category_popularity_rank",
    ]],
    request_features,
    user_item_features,
]

ranker_v1 = FeatureService(
    name="ranker_v1", features=list(V1_FEATURES), description="Features of the Wide & Deep ranker, version 1.",
)

#: Version 1 and the real-time signals the feature updater pushes within a second of each event; rankers
#: trained on it (the default since the streaming consumers) read the user's last hour and day too.
ranker_v2 = FeatureService(
    name="ranker_v2",
    features=[
        *V1_FEATURES,
        user_realtime[[
            "events_1h", "events_1d", "view_1h", "view_1d", "click_1h", "click_1d", "add_to_cart_1d",
            "purchase_1d", "rate_1h", "rate_1d", "session_events",
        ]],
    ],
    description="Features of the Wide & Deep ranker, version 2: version 1 and the user's real-time signals.",
)

candidates_v1 = FeatureService(
    name="candidates_v1",
    features=[item_cooccurrence, user_features[["top_categories", "category_affinity_keys"]]],
    description="What candidate generation reads: item neighbours and the user's top categories.",
)

realtime_v1 = FeatureService(
    name="realtime_v1",
    features=[user_realtime],
    description="The user's latest pushed signals.",
)

"""Feature services: the one contract between features, training and serving."""

from feast import FeatureService

from features import item_cooccurrence, item_features, user_features, user_realtime
from on_demand import request_features, user_item_features

ranker_v1 = FeatureService(
    name="ranker_v1",
    features=[
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
    ],
    description="Features of the Wide & Deep ranker, version 1.",
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

"""The evaluation split replayed through the serving pipeline: a world of the training part only, lists
that went through post-processing, asked at each user's own split time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from embeddings.train import TrainConfig
from monitoring.served import ServedPipeline
from recsys.backends import open_lake
from tests.bento_services.pipeline_data import build_world
from tests.conftest import make_settings, own_feature_repo
from training.evaluation import positives, temporal_split


def test_served_lists_come_from_the_pipeline_at_the_split(tmp_path: Path) -> None:
    base = own_feature_repo(make_settings("local", tmp_path / "base"), tmp_path)
    start = pd.Timestamp(datetime.now(UTC) - timedelta(days=11)).floor("D")
    world = build_world(base, tmp_path, users=40, items=90, start=start, interactions=4_000)
    train, test = temporal_split(positives(open_lake(base).interactions()))
    popular = str(train["item_id"].value_counts().index[0])
    # A business rule only the serving pipeline applies: the most popular item is deny-listed.
    settings = base.model_copy(update={"serving": base.serving.model_copy(update={"deny_list": [popular]})})

    served = ServedPipeline(settings, tmp_path / "worlds", TrainConfig(epochs=1), progress=lambda _: None)
    served.fit(train)
    users = sorted(test["user_id"].unique())
    lists = served.recommend(users, k=20)
    served.close()

    assert served.world is not None
    replayed = open_lake(served.world).interactions(columns=["user_id", "event_time"]).to_pandas()
    last = replayed.groupby("user_id")["event_time"].max()
    assert all(last[u] < served.request_at[u] for u in last.index), "the world holds events past a split"
    assert served.degradations == {"candidate_scores": len(users)}  # no ranker given: fusion order, served
    universe = set(train["item_id"])
    history = train.groupby("user_id")["item_id"].agg(set)
    for user in users:
        got = lists[user]
        assert len(got) == 20 and len(set(got)) == 20, user
        assert popular not in got, "the deny list (post-processing) was not applied"
        assert set(got) <= universe, "recommended an item the training part never saw"
        assert not set(got) & history[user], "recommended an item the user already has"
    assert world.warm_user in lists

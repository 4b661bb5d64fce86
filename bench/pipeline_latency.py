"""In-process latency of `RecommendationPipeline.recommend` (no HTTP): full path and cached path.

    RECSYS_DATA_DIR=... python bench/pipeline_latency.py --requests 300 [--stand-in-ranker] [--as-of data-end]

`--as-of data-end` asks at the end of the data (ml-latest-small ends in 2018): asked now, every stored
feature is past its TTL and answers keep candidate order (`stale_features`), so the ranker never runs.

Needs a published candidate artifact (`recsys build-candidates`) and an imported catalog. With
`--stand-in-ranker` and no trained ranker in the model store, an untrained Wide & Deep network of the
real architecture scores the candidates, so the ranking stage costs what it will cost.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

import numpy as np

from bento_services.pipeline.batch import active_users, parse_as_of, precompute
from bento_services.pipeline.contracts import Ranker, RecommendationRequest
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from bento_services.pipeline.rankers import load_rankers
from recsys.settings import Settings


def stand_in_ranker(settings: Settings) -> Ranker:
    from recsys.features.service import service_layout
    from recsys.features.store import open_feature_store
    from recsys.models.ranker import FeatureEncoder, WideDeep, WideDeepConfig, WideDeepRanker, columns_of

    encoder = FeatureEncoder(columns_of(service_layout(open_feature_store(settings), "ranker_v1").specs))
    encoder.mean, encoder.std = [0.0] * encoder.dense_size, [1.0] * encoder.dense_size
    net = WideDeep(WideDeepConfig(encoder.dense_size, (1,) * len(encoder.categorical), encoder.wide_buckets))
    return WideDeepRanker("stand-in-untrained", encoder, net.eval())


def measure(pipeline: RecommendationPipeline, users: list[str], requests: int, n: int,
            cached: bool, at: datetime | None = None) -> dict[str, object]:
    for user in users[:20]:  # warm-up: first-touch connections and caches
        pipeline.recommend(RecommendationRequest(user, n=n, at=at), use_precomputed=cached)
    times: list[float] = []
    levels: dict[str, int] = {}
    for k in range(requests):
        started = time.perf_counter()
        answer = pipeline.recommend(RecommendationRequest(users[k % len(users)], n=n, at=at),
                                    use_precomputed=cached)
        times.append((time.perf_counter() - started) * 1000)
        key = f"{answer.degradation.value}{' cached' if answer.cached else ''}"
        levels[key] = levels.get(key, 0) + 1
    p50, p95, p99 = (round(float(np.percentile(times, q)), 2) for q in (50, 95, 99))
    return {"path": "cached" if cached else "full", "requests": requests, "p50_ms": p50, "p95_ms": p95,
            "p99_ms": p99, "answers": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--stand-in-ranker", action="store_true")
    parser.add_argument("--as-of", default=None, help="request time: data-end or ISO 8601 (default now)")
    args = parser.parse_args()
    settings = Settings.load()
    at = parse_as_of(args.as_of, settings)
    ranker, variants = load_rankers(settings)
    if ranker is None and args.stand_in_ranker:
        ranker = stand_in_ranker(settings)  # load_rankers already set torch to one thread
    pipeline = build_pipeline(settings, ranker=ranker, variant_rankers=variants)
    users = active_users(settings)
    results = [measure(pipeline, users, args.requests, args.n, cached=False, at=at)]
    precompute(pipeline, users, k=100, computed_at=datetime.now(UTC), as_of=at)
    results.append(measure(pipeline, users, args.requests, args.n, cached=True, at=at))
    pipeline.close()
    print(json.dumps({"ranker": getattr(ranker, "version", None), "as_of": args.as_of, "results": results},
                     indent=1))


if __name__ == "__main__":
    main()

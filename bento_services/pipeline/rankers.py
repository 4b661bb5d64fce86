"""The rankers serving uses, from the BentoML model store: the latest, and each version a variant names."""

from __future__ import annotations

import logging
from pathlib import Path

from bento_services.pipeline.contracts import Ranker
from bento_services.pipeline.pipeline import RecommendationPipeline, build_pipeline
from bento_services.pipeline.retrieve import current_folder
from recsys.release import read_release
from recsys.settings import Settings

log = logging.getLogger(__name__)


def load_rankers(settings: Settings, home: Path | None = None) -> tuple[Ranker | None, dict[str, Ranker]]:
    """(the release's stable ranker (`recsys.release`; without a release record `ranker:latest`) or None when the
    store has none, {version: ranker} for the experiments' versions).

    Sets torch to one intra-op thread for this process: a request scores one list of ~1,000 rows,
    where a second thread only adds spin-waits (measured on 2 busy cores: 119 ms with 2 threads,
    17 ms with 1); parallelism comes from concurrent requests.
    """
    import torch

    from recsys.models.ranker import MODEL_NAME, load_ranker

    torch.set_num_threads(1)

    release = read_release(settings.data_path)
    stable = release.stable.ranker if release is not None and release.stable.ranker else "latest"
    default: Ranker | None
    try:
        default = load_ranker(f"{MODEL_NAME}:{stable}", home)
    except Exception as exc:  # noqa: BLE001 - no trained ranker yet: serve by candidate scores
        log.warning("no ranker in the model store (%r): answers are ordered by candidate scores", exc)
        default = None
    variants: dict[str, Ranker] = {}
    for variant in settings.serving.experiments:
        version = variant.ranker_version
        if version is None or version in variants:
            continue
        try:
            variants[version] = load_ranker(f"{MODEL_NAME}:{version}", home)
        except Exception as exc:  # noqa: BLE001 - a variant whose model is missing falls back to the default
            log.warning("ranker %s of variant %s is not in the model store: %r", version, variant.name, exc)
    return default, variants


def build_serving_pipeline(settings: Settings, home: Path | None = None) -> RecommendationPipeline:
    """`build_pipeline` with the rankers of the model store (none yet: answers ordered by candidate scores), on the
    stable version alone (`models/CURRENT`, not followed): what batch jobs such as the precompute job compute with,
    never a canary's lists."""
    ranker, variants = load_rankers(settings, home)
    return build_pipeline(settings, candidates_dir=current_folder(settings), ranker=ranker, variant_rankers=variants)

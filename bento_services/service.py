"""The recommendation API as a BentoML service: loads the models, builds the pipeline, mounts the FastAPI app.

Thin by design: the routes are `bento_services.api.http`, the stages `bento_services.pipeline.pipeline`. The models are
referenced at class level so that `bentoml build` puts them in the Bento; hosting choices (configuration,
the timeout-middleware fix, the frozen start-up heap) are `bento_services.hosting`, measured in
`bench/bentoml_overhead.py`. Settings come from the environment (`RECSYS_*`), read once here. With a release
record in the data directory every worker serves and follows it (`bento_services.models.served_candidates`).

    bentoml serve bento_services.service:Recsys      # what `make serve` runs
"""

from __future__ import annotations

import bentoml

from bento_services import hosting
from bento_services.api.edge import ENDPOINTS
from bento_services.models import CANDIDATES_MODEL, RANKER_MODEL, reference, served_candidates
from bento_services.pipeline.retrieve import current_folder
from recsys.settings import Settings

hosting.fix_timeout_middleware()
API = hosting.LateApp()
SETTINGS = Settings.load()
_CURRENT = current_folder(SETTINGS)


@bentoml.service(name="recsys", **{**hosting.SERVICE_CONFIG, "workers": SETTINGS.serving.workers})
@bentoml.asgi_app(API)
class Recsys:
    ranker = reference(RANKER_MODEL)
    candidates = reference(CANDIDATES_MODEL, prefer=_CURRENT.name if _CURRENT else None)

    def __init__(self) -> None:
        from bento_services.api.directory import CatalogUsers
        from bento_services.api.http import create_app
        from bento_services.api.items import CatalogItems
        from bento_services.api.lag import consumer_lag
        from bento_services.metrics import count_published
        from bento_services.pipeline.pipeline import build_pipeline
        from bento_services.pipeline.rankers import load_rankers
        from bento_services.serving_log import open_serving_log
        from recsys.backends import open_bus

        default, variants = load_rankers(SETTINGS) if self.ranker is not None else (None, {})
        self.pipeline = build_pipeline(SETTINGS, candidates_dir=served_candidates(SETTINGS, self.candidates),
                                       ranker=default, variant_rankers=variants)
        self.bus = open_bus(SETTINGS, count_published)
        self.users = CatalogUsers(SETTINGS)
        self.items = CatalogItems(SETTINGS)
        self.lag = consumer_lag(SETTINGS)
        self.serving_log = open_serving_log(SETTINGS)
        API.plug(create_app(SETTINGS, self.pipeline, self.bus, users=self.users, lag=self.lag, items=self.items,
                            serving_log=self.serving_log))

    @bentoml.on_startup
    def freeze_heap(self) -> None:
        hosting.freeze_startup_heap()
        hosting.export_gc_pauses()

    @bentoml.on_shutdown
    def close(self) -> None:
        self.pipeline.close()
        self.bus.close()
        self.users.close()
        self.items.close()
        if self.lag is not None:
            self.lag.close()
        self.serving_log.close()


Recsys.add_asgi_middleware(hosting.OwnRoutes, api=API, paths=ENDPOINTS)  # type: ignore[attr-defined]  # a Service

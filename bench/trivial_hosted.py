"""The trivial route hosted the way `bento_services.service` hosts the API (see `bento_services.hosting`).

A module of its own because the timeout-middleware fix applies to the whole worker process.
`TrivialFixOnly` isolates the fix: the issue's quiet configuration plus the cancelled timer, nothing else.
"""

from __future__ import annotations

import bentoml

from bench.trivial_app import QUIET, app
from bento_services import hosting

hosting.fix_timeout_middleware()


@bentoml.service(name="trivial_hosted", **hosting.SERVICE_CONFIG)
@bentoml.asgi_app(app)
class TrivialHosted:
    """Our hosting configuration, the fix and the start-up heap frozen."""

    @bentoml.on_startup
    def freeze(self) -> None:
        hosting.freeze_startup_heap()


@bentoml.service(name="trivial_fix_only", **QUIET)
@bentoml.asgi_app(app)
class TrivialFixOnly:
    """The issue's quiet configuration plus the timer fix."""

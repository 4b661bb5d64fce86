"""`python -m bento_services serve|build`: what `make serve` and `make bento` run.

Both first save the data directory's current candidate artifact to the model store (once per version), so
the service and the Bento reference the artifact the data directory names. `serve` hosts the service the
way production does (`bentoml serve`, our configuration) on `serving.host:serving.port` of the settings.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bento_services.models import save_current
from recsys.settings import ROOT_DIR, Settings

SERVICE = "bento_services.service:Recsys"


def main(argv: list[str]) -> None:
    if argv not in (["serve"], ["build"]):
        raise SystemExit("usage: python -m bento_services serve|build")
    settings = Settings.load()
    tag = save_current(settings)
    print(f"candidate artifact: {tag or 'none (the service answers with popular items)'}", flush=True)
    bentoml = str(Path(sys.executable).parent / "bentoml")
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reports from a loopback-only machine
    os.chdir(ROOT_DIR)
    if argv == ["serve"]:
        os.execv(bentoml, [bentoml, "serve", SERVICE, "--host", settings.serving.host,
                           "--port", str(settings.serving.port)])
    os.execv(bentoml, [bentoml, "build", "--output", "tag"])


if __name__ == "__main__":
    main(sys.argv[1:])

"""`python -m bento_services serve|build|requirements`: what `make serve` and `make bento` run.

`serve` and `build` first save the data directory's current candidate artifact to the model store (once per version), so
the service and the Bento reference the artifact the data directory names. `serve` hosts the service the
way production does (`bentoml serve`, our configuration) on `serving.host:serving.port` of the settings.
`requirements` rewrites `requirements/serving.txt`, the pinned serving set the Bento installs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bento_services.models import save_current
from bento_services.requirements import write
from recsys.settings import ROOT_DIR, Settings

SERVICE = "bento_services.service:Recsys"
SERVING_REQUIREMENTS = "requirements/serving.txt"


def main(argv: list[str]) -> None:
    if argv not in (["serve"], ["build"], ["requirements"]):
        raise SystemExit("usage: python -m bento_services serve|build|requirements")
    if argv == ["requirements"]:
        pins = write(ROOT_DIR / SERVING_REQUIREMENTS)
        size = sum(pin.installed_bytes for pin in pins) / 2**20
        print(f"{SERVING_REQUIREMENTS}: {len(pins)} packages, {size:,.0f} MiB installed here")
        return
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

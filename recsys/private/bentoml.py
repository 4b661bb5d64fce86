"""BentoML 1.4 internals the platform relies on.

* `model_store(home)`: a model store rooted in a folder of our choosing (tests, the Bento build); BentoML's
  public API only reaches the configured one.
* `traffic`: the module whose `TimeoutMiddleware` `bento_services.hosting` replaces with a variant that cancels
  its timer (BentoML never does; see the hosting module).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore
from bentoml._internal.server.http import traffic

__all__ = ["model_store", "traffic"]


def model_store(home: Path | None = None) -> Any:
    """The model store under ``home`` (a BENTOML_HOME folder), or BentoML's configured one."""
    if home is None:
        return BentoMLContainer.model_store.get()
    (home / "models").mkdir(parents=True, exist_ok=True)
    return ModelStore(str(home / "models"))

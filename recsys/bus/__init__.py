"""The event bus: one interface (`EventBus`), one file per backend (`kafka`, `in_process`), chosen in
`recsys.backends.open_bus`. The consumers both feed are `recsys.streaming`."""

from recsys.bus.base import EventBus, Outcome

__all__ = ["EventBus", "Outcome"]

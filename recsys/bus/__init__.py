"""The event bus: one interface (`EventBus`), one file per backend (`kafka`, `in_process`), chosen in
`recsys.backends.open_bus`; and the store writer, the consumer the `local` bus runs in process."""

from recsys.bus.base import EventBus, Outcome

__all__ = ["EventBus", "Outcome"]

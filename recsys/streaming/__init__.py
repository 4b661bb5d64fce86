"""The streaming layer: the consumers of `interaction-events` that carry a click into the stores, the lake,
the real-time features and the user's live session.

- `decode`: bytes to a validated event, or `InvalidEvent` with the reason (the dead-letter queue's);
- `consumers`: each consumer's effect on one batch (`handle` returns once it is durable);
- `kafka_runner`: the Kafka loop (one group per consumer, offsets committed after the effect);
  in `local` the in-process bus calls the same consumers (`recsys.backends.open_bus`).
"""

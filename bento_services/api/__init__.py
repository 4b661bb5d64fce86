"""The HTTP API over the pipeline: routes, request and response schemas, API keys, the event bus the write
endpoints publish to, and the user directory."""

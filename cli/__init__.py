"""The `recsys` command: the top layer, wiring the builders, the serving application and the reports."""

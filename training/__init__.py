"""Training: point-in-time training sets from Feast, and (next) the ranker."""

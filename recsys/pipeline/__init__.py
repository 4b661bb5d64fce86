"""The recommendation pipeline, named after its stages: retrieve (candidates), filter, score, order."""

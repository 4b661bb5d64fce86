"""The daily pipeline (`recsys pipeline run`): every batch step in order, a manifest per run, a lock, the gate."""

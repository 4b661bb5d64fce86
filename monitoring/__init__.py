"""What the served system did, read back: the evaluation split replayed through the serving pipeline
(`served`); Evidently drift reports arrive with the monitoring issue."""

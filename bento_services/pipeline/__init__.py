"""The online recommendation pipeline, one module per stage (assignment, precomputed layer, retrieve, features,
score, post-process), and its batch runner; plain importable code that the service and the CLI build."""

"""Core of the platform: settings, errors, the event schema, the store adapters (one file per backend),
feature-store access, and the model artifacts that builders write and the server reads. Imports nothing
above it (see the import-linter contracts in pyproject.toml)."""

__version__ = "0.1.0"

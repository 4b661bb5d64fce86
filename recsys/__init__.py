"""Shared core of the platform: settings, the event schema and the store adapters."""

__version__ = "0.1.0"

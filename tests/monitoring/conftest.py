"""The API tests' private PostgreSQL database fixture, for the monitoring tests that run the whole API."""

from tests.bento_services.conftest import private_database

__all__ = ["private_database"]

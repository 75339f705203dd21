"""The migrated `engine` fixture for the db tests."""

from tests.db.support import engine  # noqa: F401

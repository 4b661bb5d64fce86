"""Every use of a library's private internals, one module per library, so that an upgrade that moves one
breaks here and in `tests/recsys/test_private.py`, not somewhere in the middle of a request."""

"""The realm server, its registry and the `realm` command (CPython only)."""

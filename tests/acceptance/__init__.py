"""Acceptance tests with real worker processes (a package so its conftest keeps its own name)."""

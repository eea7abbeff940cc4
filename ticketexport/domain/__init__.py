"""Pure domain rules: no I/O happens in this package."""

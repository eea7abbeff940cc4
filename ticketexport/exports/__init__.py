"""Export use cases (request, retry, cancel, download), the worker task and maintenance."""

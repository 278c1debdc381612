"""Runtimes, one module per runtime, registered by name."""

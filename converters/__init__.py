"""Converters, one module per target format, registered by name."""

"""Device profiles: one TOML file each, installed as package data."""

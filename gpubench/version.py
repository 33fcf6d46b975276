"""The package version, importable without the package's API (the environment fingerprint
reads it from the worker)."""

__version__ = "0.1.0"

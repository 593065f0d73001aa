"""The package version, in one low module that anything may import."""

__version__ = "0.1.0"

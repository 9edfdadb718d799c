"""The package version (one place; afd_ext.__version__ re-exports it)."""
__version__ = "0.1.0"

"""Version of the nextpipe package."""

__version__ = "v0.8.0"

"""Version of the nextpipe package."""

__version__ = "v0.1.0"

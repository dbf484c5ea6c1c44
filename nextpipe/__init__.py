"""
nextpipe: decision workflows for Nextmv.

Subclass :class:`FlowSpec`, mark its functions with :func:`step`, connect them
with :func:`needs`, fan out with :func:`foreach`, collect with :func:`join`,
repeat with :func:`repeat`, skip with :func:`optional`, run Nextmv
applications with :func:`app`, and reuse their runs with :func:`cache`.
Control how nodes run with :func:`retry`, :func:`timeout`,
:func:`allow_failure` and :func:`concurrency`.
"""

from .__about__ import __version__
from ._execution import cancelled
from .config import Configuration
from .decorators import (
    allow_failure,
    app,
    cache,
    concurrency,
    foreach,
    join,
    needs,
    optional,
    repeat,
    retry,
    step,
    timeout,
)
from .flow import FlowGraph, FlowSpec
from .schema import AppOption, AppRunConfig
from .utils import log

VERSION = __version__
"""The version of nextpipe, equal to ``nextpipe.__about__.__version__``."""

__all__ = [
    "VERSION",
    "AppOption",
    "AppRunConfig",
    "Configuration",
    "FlowGraph",
    "FlowSpec",
    "__version__",
    "allow_failure",
    "app",
    "cache",
    "cancelled",
    "concurrency",
    "foreach",
    "join",
    "log",
    "needs",
    "optional",
    "repeat",
    "retry",
    "step",
    "timeout",
]

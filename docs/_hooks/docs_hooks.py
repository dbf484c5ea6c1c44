"""
MkDocs hook: turn the Sphinx roles of nextpipe's docstrings into links.

The library's numpy-style docstrings cross-reference with Sphinx roles
(``:class:`FlowSpec```, ``:func:`~nextpipe.decorators.step```). mkdocstrings
leaves them as text (``:class:FlowSpec``); this hook replaces each one by an
optional cross-reference that mkdocs-autorefs resolves to the object's heading
in the API reference, or by plain code when the target is not documented here.
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
from functools import cache
from typing import Any

# Where names are documented, in the order used to pick a page for names exported by several modules.
MODULES = (
    "nextpipe.constants",
    "nextpipe.utils",
    "nextpipe.summary",
    "nextpipe.progress",
    "nextpipe.tracing",
    "nextpipe.reporting",
    "nextpipe.threads",
    "nextpipe.uplink",
    "nextpipe.schema",
    "nextpipe.config",
    "nextpipe.decorators",
    "nextpipe.graph",
    "nextpipe.flow",
    "nextpipe.cli",
    "nextpipe",
)

HEADING_ID = re.compile(r'id="(nextpipe(?:\.\w+)*)"')
ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|const):<code>(?P<tilde>~?)(?P<target>[^<]+)</code>")


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in vars(module) if not name.startswith("_")]
    return list(names)


@cache
def _index() -> dict[str, str]:
    """Maps short and dotted names (``FlowSpec``, ``Pool.wait_one``, ``nextpipe.FlowSpec``) to identifiers."""
    modules = {name: importlib.import_module(name) for name in MODULES}
    canonical: dict[tuple[str, int], str] = {}
    # Classes and functions belong to the module that defines them, other values to the first module exporting them.
    for defining_pass in (True, False):
        for module_name, module in modules.items():
            for name in _public_names(module):
                value = getattr(module, name, None)
                if value is None or inspect.ismodule(value) or (name, id(value)) in canonical:
                    continue
                if defining_pass and getattr(value, "__module__", None) != module_name:
                    continue
                canonical[(name, id(value))] = f"{module_name}.{name}"
    index: dict[str, str] = {name: name for name in MODULES}
    members: dict[str, set[str]] = {}
    for module_name, module in modules.items():
        for name in _public_names(module):
            value = getattr(module, name, None)
            identifier = canonical.get((name, id(value)))
            if identifier is None:
                continue
            index.setdefault(name, identifier)
            index[f"{module_name}.{name}"] = identifier
            if inspect.isclass(value):
                for member in dir(value):
                    if not member.startswith("_"):
                        index[f"{name}.{member}"] = f"{identifier}.{member}"
                        members.setdefault(member, set()).add(f"{identifier}.{member}")
    for member, identifiers in members.items():
        if len(identifiers) == 1:
            index.setdefault(member, identifiers.pop())
    return index


def _scoped(target: str, scope: str, known: set[str]) -> str | None:
    """``target`` as a member of ``scope`` or of one of its parents (``run`` in ``FlowSpec``'s docstring)."""
    parts = scope.split(".")
    while parts:
        candidate = ".".join([*parts, target])
        if candidate in known:
            return candidate
        parts.pop()
    return None


def on_page_content(html_text: str, **_: Any) -> str:
    """Replace the Sphinx roles of a rendered page, resolving names in the scope of the object documented there."""
    headings = [(match.start(), match[1]) for match in HEADING_ID.finditer(html_text)]
    known = {identifier for _, identifier in headings} | set(_index().values())

    def replace(match: re.Match[str]) -> str:
        target = html.unescape(match["target"]).strip().rstrip("()")
        title = html.escape(target.rsplit(".", 1)[-1] if match["tilde"] else target)
        scope = next((identifier for start, identifier in reversed(headings) if start < match.start()), "")
        identifier = _scoped(target, scope, known) if scope else None
        identifier = identifier or _index().get(target)
        if identifier is None:
            return f"<code>{title}</code>"
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return ROLE.sub(replace, html_text)

"""
Run cache: app steps reuse a succeeded run made with the same inputs instead of paying for a new one.

The cache key (:func:`cache_key`) is a SHA-256 digest of the canonical JSON of
everything that decides a run's result: the app id, the instance id, the
options as sent, the run configuration, the input, and the code that answers
(a digest of a local app's files, or the Nextmv Cloud endpoint; a cloud run's
app version is checked when the run is reused). The store
(:class:`RunStore`) is one SQLite file that keeps, per key, where the run ran
and its id, never its output. A flow uses the cache through
:class:`RunCache`; ``nextpipe cache list`` and ``nextpipe cache clear`` manage
the store.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .constants import ENV_CACHE_DIR
from .graph import FlowDefinitionError, FlowGraph
from .utils import log_internal

KEY_VERSION = 1
"""Version of the key's layout: part of every key, so that a new layout never matches an old entry."""

STORE_FILE = "runs.sqlite3"
"""Name of the store's file in the cache directory."""

BUSY_TIMEOUT = 30.0
"""Seconds a store operation waits for another process's write to end."""

APP_DIR_EXCLUDES = frozenset({".nextmv", "__pycache__"})
"""Directories left out of a local app's code digest: its run folders and Python's bytecode of its sources."""

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """
    Write a JSON value as canonical text: object keys sorted, no whitespace, ASCII only.

    Dictionaries whose keys were inserted in any order give one text (keys of
    mixed types, such as ``1`` and ``"a"``, are sorted as JSON writes them). Numbers
    are written as Python's ``json`` sends them: an ``int`` in full, a
    ``float`` as its shortest round-trip form (``repr``), so equal floats give
    one text however they were first written (``1.00`` and ``1.0``), while
    ``1`` and ``1.0`` (an integer and a float: different bytes sent, and a
    different type in the app) and ``0.1 + 0.2`` and ``0.3`` (different floats)
    do not.

    Parameters
    ----------
    value : Any
        A value made of dicts, lists, tuples, strings, numbers, booleans and ``None``; dates and datetimes
        count as the ISO 8601 text they are sent as.

    Returns
    -------
    str
        The canonical text.

    Raises
    ------
    TypeError
        When the value holds anything else.
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True, default=_as_sent)
    except TypeError:  # keys of mixed types (1 and "a") do not sort: sort them as JSON writes them
        return json.dumps(_sorted_keys(value), separators=(",", ":"), allow_nan=True, default=_as_sent)


def _as_sent(value: Any) -> str:
    """A date or datetime as the SDK sends it, ISO 8601 text; any other value is not JSON."""
    if isinstance(value, datetime.date):  # (a datetime is a date)
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    if isinstance(key, int | float):
        return json.dumps(key, allow_nan=True)
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        # A stable sort on the written keys: of two keys written alike the later wins, as in a JSON reader.
        items = sorted(((_json_key(k), _sorted_keys(v)) for k, v in value.items()), key=lambda item: item[0])
        return dict(items)
    if isinstance(value, list | tuple):
        return [_sorted_keys(v) for v in value]
    return value


def file_digest(path: str) -> str:
    """
    Return the SHA-256 digest of a file's content.

    Parameters
    ----------
    path : str
        The file.

    Returns
    -------
    str
        The hexadecimal digest.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def directory_digest(path: str, exclude: frozenset[str] = frozenset()) -> str:
    """
    Return a digest of the names and contents of the files under a directory, also in directories it links to.

    Parameters
    ----------
    path : str
        The directory.
    exclude : frozenset of str, optional
        Names of directories to leave out, wherever they are.

    Returns
    -------
    str
        The hexadecimal SHA-256 digest of the sorted ``(relative path, content digest)`` pairs;
        paths use ``/`` on every system.

    Raises
    ------
    OSError
        When a file cannot be read.
    """
    files = []
    seen = set()
    # Linked directories count, as the SDK copies their files; a directory reached twice (a link loop) once.
    for root, directories, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            directories[:] = []
            continue
        seen.add(real)
        directories[:] = sorted(d for d in directories if d not in exclude)  # a fixed order: the same one is seen
        relative = os.path.relpath(root, path)
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full):
                files.append((os.path.normpath(os.path.join(relative, name)).replace(os.sep, "/"), full))
    return hashlib.sha256(
        canonical_json([[name, file_digest(full)] for name, full in sorted(files)]).encode()
    ).hexdigest()


def cache_key(
    app_id: str,
    instance_id: str,
    options: dict[str, str],
    run_configuration: Any,
    input: Any,
    code: dict[str, str],
    repetition: int | None = None,
) -> str:
    """
    Compute the cache key of an app run.

    Parameters
    ----------
    app_id : str
        The application.
    instance_id : str
        The instance as the step gives it (empty for the default instance).
    options : dict of str to str
        The options as sent.
    run_configuration : nextmv.RunConfiguration or dict or None
        The run configuration as sent (``None`` when the SDK derives it from the input).
    input : Any
        The input as sent: a JSON value, a string, or ``{"files": directory_digest}`` for a directory.
    code : dict of str to str
        What answers: ``{"local": directory, "files": digest}`` or ``{"cloud": endpoint}``.
    repetition : int, optional
        For a node of a ``@repeat`` step, its index: each repetition is a run of its own.

    Returns
    -------
    str
        The hexadecimal SHA-256 digest of the canonical JSON of all of these.

    Raises
    ------
    TypeError
        When the input or the configuration holds a value JSON cannot write.
    """
    if hasattr(run_configuration, "to_dict"):
        run_configuration = run_configuration.to_dict()
    parts = {
        "key_version": KEY_VERSION,
        "app_id": app_id,
        "instance_id": instance_id or "",
        "options": options,
        "configuration": run_configuration,
        "input": input,
        "code": code,
    }
    if repetition is not None:
        parts["repetition"] = repetition
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def default_cache_dir() -> str:
    """
    Return the directory of the run cache when no configuration names one.

    Returns
    -------
    str
        ``$NEXTPIPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/nextpipe``, else ``~/.cache/nextpipe``.
    """
    directory = os.environ.get(ENV_CACHE_DIR)
    if directory:
        return os.path.abspath(os.path.expanduser(directory))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nextpipe")


def parse_age(text: str) -> float:
    """
    Parse an age such as ``90``, ``90s``, ``30m``, ``12h``, ``7d`` or ``2w``.

    Parameters
    ----------
    text : str
        A non-negative number, optionally followed by a unit (seconds by default).

    Returns
    -------
    float
        The age in seconds.

    Raises
    ------
    ValueError
        When the text is not such an age.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not an age: write a number with an optional unit s, m, h, d or w, e.g. 7d.")
    return float(match.group(1)) * _AGE_UNITS[match.group(2) or "s"]


@dataclass(frozen=True)
class CacheEntry:
    """
    One stored run: where a succeeded run of an app step lives, never its output.

    Attributes
    ----------
    key : str
        The run's cache key.
    app_id : str
        The application.
    location : str
        Where it ran: the Nextmv Cloud endpoint URL, or the local app directory.
    run_id : str
        The run.
    status : str
        The run's status when stored (``succeeded``).
    created_at : float
        When it was stored, in seconds since the epoch.
    step : str
        The node that made it (``<step id>_<index>``).
    """

    key: str
    app_id: str
    location: str
    run_id: str
    status: str
    created_at: float
    step: str


_FIELDS = ("key", "app_id", "location", "run_id", "status", "created_at", "step")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    location TEXT NOT NULL,
    run_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    step TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_app_id ON runs (app_id);
"""


class RunStore:
    """
    The SQLite file that maps cache keys to stored runs.

    Safe for several threads and processes at once: every operation is one
    short transaction; the journal is in WAL mode, so readers never wait for a
    writer, and a busy file is waited for up to :data:`BUSY_TIMEOUT` seconds.
    The threads of a process share one connection, opened on first use and
    kept open (closing the last connection of a WAL file costs a checkpoint).

    Parameters
    ----------
    directory : str
        The cache directory; created when first written. The file is :data:`STORE_FILE` in it.

    Raises
    ------
    sqlite3.DatabaseError
        From any operation, when the file is not a readable store.
    OSError
        When the directory cannot be created.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, STORE_FILE)
        self._connection: Any = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        import sqlite3  # deferred: flows without a cache never import it

        with self._lock:
            if self._connection is None:
                self._create(sqlite3)
                connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, check_same_thread=False)
                # With WAL, commits need no disk flush to stay consistent: a power cut may lose the last entries only.
                connection.execute("PRAGMA synchronous=NORMAL")
                self._connection = connection
            with self._connection:  # commits, or rolls back on an error
                yield self._connection

    def close(self) -> None:
        """Close the connection, if open; the next operation opens it again."""
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _create(self, sqlite3: Any) -> None:
        """Create the file unless it exists: built aside, then linked into place, so a racing process waits for none."""
        os.makedirs(self.directory, exist_ok=True)
        if os.path.exists(self.path):
            return
        descriptor, building = tempfile.mkstemp(prefix=".runs-", suffix=".tmp", dir=self.directory)
        os.close(descriptor)
        try:
            with contextlib.closing(sqlite3.connect(building)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")  # kept in the file: readers never wait for a writer
                connection.executescript(_SCHEMA)
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(building, self.path)
        finally:
            os.unlink(building)

    def get(self, key: str) -> CacheEntry | None:
        """
        Return the entry of a key.

        Parameters
        ----------
        key : str
            A cache key.

        Returns
        -------
        CacheEntry or None
            The entry, or ``None`` when there is none.
        """
        with self._transaction() as db:
            row = db.execute(f"SELECT {', '.join(_FIELDS)} FROM runs WHERE key = ?", (key,)).fetchone()
        return CacheEntry(*row) if row else None

    def put(self, entry: CacheEntry) -> None:
        """
        Store an entry, replacing the key's previous one.

        Parameters
        ----------
        entry : CacheEntry
            The entry.
        """
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                tuple(getattr(entry, name) for name in _FIELDS),
            )

    def entries(self, app_id: str | None = None) -> list[CacheEntry]:
        """
        List the entries, oldest first.

        Parameters
        ----------
        app_id : str, optional
            Only the entries of this application.

        Returns
        -------
        list of CacheEntry
            The entries.
        """
        query, where, parameters = f"SELECT {', '.join(_FIELDS)} FROM runs", *_filter(app_id, None)
        with self._transaction() as db:
            rows = db.execute(f"{query}{where} ORDER BY created_at", parameters).fetchall()
        return [CacheEntry(*row) for row in rows]

    def clear(self, app_id: str | None = None, older_than: float | None = None) -> int:
        """
        Remove entries.

        Parameters
        ----------
        app_id : str, optional
            Only the entries of this application.
        older_than : float, optional
            Only the entries stored more than this many seconds ago.

        Returns
        -------
        int
            How many entries were removed.
        """
        where, parameters = _filter(app_id, older_than)
        with self._transaction() as db:
            return db.execute(f"DELETE FROM runs{where}", parameters).rowcount


def _filter(app_id: str | None, older_than: float | None) -> tuple[str, tuple[Any, ...]]:
    """The WHERE clause and its parameters selecting entries of an app and/or older than an age (s)."""
    conditions, parameters = [], []
    if app_id is not None:
        conditions.append("app_id = ?")
        parameters.append(app_id)
    if older_than is not None:
        conditions.append("created_at < ?")
        parameters.append(time.time() - older_than)
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), tuple(parameters)


class RunCache:
    """
    A flow's use of the run cache: which steps use it, and the store, which never fails the flow.

    An error of the store (a corrupt or unreadable file, a directory that
    cannot be created) is reported once; from then on the flow runs without the
    cache.

    Parameters
    ----------
    store : RunStore
        The store.
    max_age : float or None
        Seconds after which an entry is no longer reused; ``None`` for never.
    flow_wide : bool
        Whether app steps without ``@cache`` use the cache (``Configuration(cache=True)``).
    """

    def __init__(self, store: RunStore, max_age: float | None, flow_wide: bool):
        self.store = store
        self.max_age = max_age
        self.flow_wide = flow_wide
        self._broken = False
        self._lock = threading.Lock()
        self._code_digests: dict[str, str] = {}

    @classmethod
    def for_flow(cls, graph: FlowGraph, config: Any) -> RunCache | None:
        """
        Return the run cache of a flow, or ``None`` when none of its steps uses it.

        Parameters
        ----------
        graph : FlowGraph
            The flow's graph.
        config : Configuration
            Its ``cache``, ``cache_dir`` and ``cache_max_age``.

        Returns
        -------
        RunCache or None
            The cache; the store is opened on first use.

        Raises
        ------
        FlowDefinitionError
            When ``@cache`` marks a step that is not an app step; the message names the step.
        """
        used = config.cache
        for step in graph.steps:
            settings = step.definition.cache
            if settings is None:
                continue
            if not step.definition.is_app():
                raise FlowDefinitionError(
                    f"Step {step.definition.get_id()}: @cache applies to app steps (@app) only; a Python step "
                    "runs again on every run. Remove @cache, or move the costly work into an app."
                )
            used = used or settings.enabled
        if not used:
            return None
        directory = config.cache_dir and os.path.abspath(os.path.expanduser(config.cache_dir))
        return cls(RunStore(directory or default_cache_dir()), config.cache_max_age, config.cache)

    def settings(self, definition: Any) -> tuple[bool, bool]:
        """
        Tell whether a step uses the cache, and whether it forces a fresh run.

        Parameters
        ----------
        definition : Step
            The step's definition.

        Returns
        -------
        tuple of (bool, bool)
            ``(used, refresh)``.
        """
        settings = definition.cache
        if settings is None:
            return self.flow_wide and not self._broken, False
        return settings.enabled and not self._broken, settings.refresh

    def code_digest(self, directory: str) -> str:
        """
        Return the digest of a local app's files, computed once per flow.

        Parameters
        ----------
        directory : str
            The app directory; :data:`APP_DIR_EXCLUDES` are left out.

        Returns
        -------
        str
            The digest (see :func:`directory_digest`).
        """
        with self._lock:
            digest = self._code_digests.get(directory)
            if digest is None:
                digest = self._code_digests[directory] = directory_digest(directory, APP_DIR_EXCLUDES)
        return digest

    def get(self, key: str) -> CacheEntry | None:
        """
        Return the entry of a key unless it expired or the store fails.

        Parameters
        ----------
        key : str
            A cache key.

        Returns
        -------
        CacheEntry or None
            The entry, or ``None``.
        """
        entry = self._safely(self.store.get, key)
        if entry is None or (self.max_age is not None and time.time() - entry.created_at > self.max_age):
            return None
        return entry

    def put(self, entry: CacheEntry) -> None:
        """
        Store an entry; a failing store is reported once and ignored.

        Parameters
        ----------
        entry : CacheEntry
            The entry.
        """
        self._safely(self.store.put, entry)

    def _safely(self, operation: Any, argument: Any) -> Any:
        if self._broken:
            return None
        import sqlite3

        try:
            return operation(argument)
        except (sqlite3.Error, OSError) as error:
            with self._lock:
                report, self._broken = not self._broken, True
            if report:
                log_internal(
                    f"The run cache at {self.store.path} cannot be used ({type(error).__name__}: {error}); "
                    "this flow runs without it. Delete that file to start a new cache."
                )
            return None


def _format_time(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_cache_command(commands: Any) -> None:
    """
    Add the ``cache`` command (``list``, ``clear``) to the ``nextpipe`` command's subparsers.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        The subparsers of the ``nextpipe`` parser.
    """
    parser = commands.add_parser(
        "cache",
        help="list or clear the run cache of app steps",
        description="List or clear the run cache of app steps. The cache directory is --dir, else "
        f"${ENV_CACHE_DIR}, else $XDG_CACHE_HOME/nextpipe, else ~/.cache/nextpipe.",
    )
    actions = parser.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    for name, help_text in (("list", "print the stored runs, oldest first"), ("clear", "remove stored runs")):
        action = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        action.add_argument("--dir", metavar="DIR", help="the cache directory")
        action.add_argument("--app", metavar="ID", help="only the runs of this application")
        if name == "clear":
            action.add_argument(
                "--older-than",
                metavar="AGE",
                type=_age_argument,
                help="only runs stored longer ago than AGE: a number with a unit s, m, h, d or w, e.g. 7d",
            )


def _age_argument(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_cache_command(arguments: argparse.Namespace, out: Any) -> int:
    """
    Run ``nextpipe cache list`` or ``nextpipe cache clear``.

    Parameters
    ----------
    arguments : argparse.Namespace
        The parsed arguments.
    out : TextIO
        Where to print.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    sqlite3.Error, OSError
        When the store cannot be read or written.
    """
    directory = os.path.expanduser(arguments.dir) if arguments.dir else default_cache_dir()
    with contextlib.closing(RunStore(directory)) as store:
        exists = os.path.exists(store.path)  # reading or clearing a missing store creates none
        if arguments.cache_action == "clear":
            removed = store.clear(arguments.app, arguments.older_than) if exists else 0
            print(f"Removed {removed} stored run{'' if removed == 1 else 's'} from {store.path}.", file=out)
            return 0
        entries = store.entries(arguments.app) if exists else []
    if not entries:
        print(f"No stored runs in {store.path}.", file=out)
        return 0
    rows = [("STORED (UTC)", "APP", "RUN", "STATUS", "STEP", "WHERE")]
    rows += [(_format_time(e.created_at), e.app_id, e.run_id, e.status, e.step, e.location) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]), file=out)
    return 0


__all__ = [
    "APP_DIR_EXCLUDES",
    "CacheEntry",
    "RunCache",
    "RunStore",
    "cache_key",
    "canonical_json",
    "default_cache_dir",
    "directory_digest",
    "parse_age",
]

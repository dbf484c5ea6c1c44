"""
Decorators that declare the steps of a flow and how they connect.

``@step`` marks a function of a :class:`~nextpipe.flow.FlowSpec` subclass as a
step and is always the innermost decorator; the others (``@needs``,
``@optional``, ``@repeat``, ``@foreach``, ``@join``, ``@app``, ``@cache``,
``@retry``, ``@timeout``, ``@allow_failure``, ``@concurrency``) are applied on
top of it in any order and store their settings on the step's :class:`Step`.

Mistakes in a declaration (a decorator below ``@step``, ``@repeat`` or
``@foreach`` without its call, a repetition count of zero, ``options`` that are
not a dict, ...) are recorded where they happen and reported, naming the step,
when the flow is constructed. What cannot carry a record raises ``TypeError``
at once: ``@step`` on an ``async def`` function or on a callable without a
name, ``@foreach(5)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from .utils import convert_to_string_values

# Attribute under which declaration mistakes are recorded on a function. ``functools.wraps``
# copies a function's ``__dict__``, so mistakes made below ``@step`` travel to the step.
DECLARATION_ERRORS_ATTR = "_nextpipe_declaration_errors"
"""Name of the function attribute listing its declaration mistakes, reported when the flow is constructed."""

UNCALLED_DECORATOR_ATTR = "_nextpipe_uncalled_decorator"
"""Name of the attribute flagging a decorator that a factory returned when used without its call."""


class InputType(Enum):
    """
    Kind of input of an app step (deprecated: the input decides the kind of run).

    Attributes
    ----------
    JSON : int
        JSON input.
    FILES : int
        Multi-file input.
    """

    JSON = 1
    FILES = 2


class StepType(Enum):
    """
    Kind of a step.

    Attributes
    ----------
    DEFAULT : int
        A Python function.
    APP : int
        A run of a Nextmv application.
    """

    DEFAULT = 1
    APP = 2


class Needs:
    """
    The predecessors of a step, set by ``@needs``.

    Parameters
    ----------
    predecessors : list of Callable
        The step functions whose results the step receives, in this order.
    """

    def __init__(self, predecessors: list[Callable]):
        self.predecessors = predecessors

    def __repr__(self) -> str:
        return f"StepNeeds({','.join(getattr(p, '__name__', repr(p)) for p in self.predecessors)})"


class Optional:
    """
    The condition of an optional step, set by ``@optional``.

    Parameters
    ----------
    condition : Callable[[Step], bool]
        Called with the step's :class:`Step` when the step becomes ready; the
        step is skipped when it returns a falsy value.
    """

    def __init__(self, condition: Callable[[Step], bool]):
        self.condition = condition

    def __repr__(self) -> str:
        return f"StepOnlyIf({self.condition})"


class Repeat:
    """
    The number of repetitions of a step, set by ``@repeat``.

    Parameters
    ----------
    repetitions : int
        How many times the step runs on the same input.
    """

    def __init__(self, repetitions: int):
        self.repetitions = repetitions

    def __repr__(self) -> str:
        return f"StepRepeat({self.repetitions})"


class Foreach:
    """Marker set by ``@foreach``: each item of the step's list result feeds one run of each successor."""

    def __repr__(self) -> str:
        return "StepForeach()"


class Join:
    """Marker set by ``@join``: the step receives all of its inputs as one list."""

    def __repr__(self) -> str:
        return "StepJoin()"


class _SdkDefaultPolling:
    """Stands for ``nextmv.DEFAULT_POLLING_OPTIONS`` in signatures, so that importing nextpipe stays cheap."""

    def __repr__(self) -> str:
        return "nextmv.DEFAULT_POLLING_OPTIONS"


SDK_DEFAULT_POLLING = _SdkDefaultPolling()
"""Default of ``polling_options``: resolved to ``nextmv.DEFAULT_POLLING_OPTIONS`` when an app step is declared."""


class App:
    """
    The settings of an app step, set by ``@app``.

    Parameters
    ----------
    app_id : str
        Id of the Nextmv application to run.
    instance_id : str, default=""
        Id of the instance to run; empty for the application's default.
    input_type : InputType, optional
        Deprecated and ignored.
    parameters : dict, optional
        Deprecated alias of ``options``, used when ``options`` is not given.
    options : dict, optional
        Run options; values are converted to strings and ``None`` values dropped.
    full_result : bool, default=False
        Whether the step's result is the whole ``nextmv.RunResult`` instead of its output.
    run_configuration : nextmv.RunConfiguration or dict, optional
        Configuration of the run.
    polling_options : nextmv.PollingOptions, default=nextmv.DEFAULT_POLLING_OPTIONS
        How to poll for the run's result.
    bypass_result : Any, optional
        When set, no run is made and this value is the run's output.
    emit_live_logs : bool, default=False
        Whether to relay the run's logs while it runs.

    Raises
    ------
    TypeError
        When an argument has the wrong type; the message names the argument.
    ValueError
        When ``app_id`` is empty.
    """

    def __init__(
        self,
        app_id: str,
        instance_id: str = "",
        input_type: InputType | None = None,
        parameters: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        full_result: bool = False,
        run_configuration: Any = None,
        polling_options: Any = SDK_DEFAULT_POLLING,
        bypass_result: Any = None,
        emit_live_logs: bool = False,
    ):
        if not isinstance(app_id, str) or not app_id.strip():
            raise (ValueError if isinstance(app_id, str) else TypeError)(
                f"app_id must be a non-empty string naming the application, got {app_id!r}."
            )
        if not isinstance(instance_id, str):
            raise TypeError(f"instance_id must be a string (empty for the default instance), got {instance_id!r}.")
        options = options if options is not None else parameters
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(
                f"options must be a dict of option names to values, e.g. {{'duration': 10}}, got {options!r}."
            )
        self.app_id = app_id
        self.instance_id = instance_id
        self.options = convert_to_string_values(dict(options or {}))
        self.input_type = input_type
        self.full_result = full_result
        import nextmv  # deferred to the first app step: pure-Python flows never pay for the SDK's import

        if polling_options is SDK_DEFAULT_POLLING:
            polling_options = nextmv.DEFAULT_POLLING_OPTIONS
        elif polling_options is not None and not isinstance(polling_options, nextmv.PollingOptions):
            raise TypeError(f"polling_options must be a nextmv.PollingOptions, got {polling_options!r}.")
        if run_configuration is not None and not isinstance(run_configuration, nextmv.RunConfiguration | Mapping):
            raise TypeError(
                f"run_configuration must be a nextmv.RunConfiguration (or a dict), got {run_configuration!r}."
            )
        self.run_configuration = run_configuration
        self.polling_options = polling_options
        self.bypass_result = bypass_result
        self.emit_live_logs = emit_live_logs

    @property
    def parameters(self) -> dict[str, str]:
        """dict: Deprecated alias of :attr:`options`."""
        return self.options

    def __repr__(self) -> str:
        return f"StepRun({self.app_id}, {self.instance_id}, {self.options}, {self.full_result})"


class Step:
    """
    The definition of one step: its function and the settings of its decorators.

    Parameters
    ----------
    function : Callable
        The user's function.

    Attributes
    ----------
    function : Callable
        The user's function, called when the step runs (unless it is an app step).
    type : StepType
        ``StepType.APP`` once ``@app`` is applied, else ``StepType.DEFAULT``.
    run_ids : list of str
        Ids of the app runs the step made in its latest execution.
    needs, optional, repeat, foreach, join, app, cache, retry, timeout, allow_failure, concurrency
        The settings of the corresponding decorators, ``None`` when not applied.
    """

    def __init__(self, function: Callable):
        self.function = function
        self.type = StepType.DEFAULT
        self.run_ids: list[str] = []
        self.needs: Needs | None = None
        self.optional: Optional | None = None
        self.repeat: Repeat | None = None
        self.foreach: Foreach | None = None
        self.join: Join | None = None
        self.app: App | None = None
        self.cache: Cache | None = None
        self.retry: Retry | None = None
        self.timeout: Timeout | None = None
        self.allow_failure: AllowFailure | None = None
        self.concurrency: Concurrency | None = None

    def __repr__(self) -> str:
        parts = [self.get_id()] + [repr(s) for s in (self.needs, self.repeat, self.app) if s is not None]
        return f"Step({', '.join(parts)})"

    def get_id(self) -> str:
        """
        Return the step's id.

        Returns
        -------
        str
            The name of the step's function.
        """
        return self.function.__name__

    def is_needs(self) -> bool:
        """bool: Whether the step has predecessors (``@needs``)."""
        return self.needs is not None

    def skip(self) -> bool:
        """
        Evaluate the ``@optional`` condition.

        Returns
        -------
        bool
            True when the step is optional and its condition returns a falsy value.
        """
        return self.optional is not None and not self.optional.condition(self)

    def is_repeat(self) -> bool:
        """bool: Whether the step is repeated (``@repeat``)."""
        return self.repeat is not None

    def get_repetitions(self) -> int:
        """int: The number of repetitions; 1 when the step is not repeated."""
        return self.repeat.repetitions if self.repeat is not None else 1

    def is_app(self) -> bool:
        """bool: Whether the step runs a Nextmv application (``@app``)."""
        return self.type == StepType.APP

    def get_app_id(self) -> str | None:
        """str or None: The id of the application an app step runs; ``None`` for other steps."""
        return self.app.app_id if self.app is not None else None

    def set_run_ids(self, run_ids: list[str]) -> None:
        """
        Record the ids of the app runs the step made.

        Parameters
        ----------
        run_ids : list of str
            The run ids.
        """
        self.run_ids = run_ids

    def get_run_ids(self) -> list[str]:
        """list of str: The ids of the app runs the step made."""
        return self.run_ids

    def is_foreach(self) -> bool:
        """bool: Whether the step fans out over its list result (``@foreach``)."""
        return self.foreach is not None

    def is_join(self) -> bool:
        """bool: Whether the step receives all its inputs as one list (``@join``)."""
        return self.join is not None


def _record_error(function: Callable, message: str) -> None:
    try:
        errors = vars(function).setdefault(DECLARATION_ERRORS_ATTR, [])
    except TypeError:  # an object without attributes of its own: nothing to carry the mistake to the flow
        raise TypeError(message) from None
    errors.append(message)


def _step_of(function: Callable, decorator: str) -> Step | None:
    """The :class:`Step` of a decorated step, or None after recording that ``@step`` is missing below."""
    definition = getattr(function, "step", None)
    if isinstance(definition, Step):
        return definition
    if not hasattr(function, UNCALLED_DECORATOR_ATTR):  # else that is the mistake to report
        _record_error(
            function,
            f"@{decorator} is applied to a function that is not a step yet: "
            "@step must be the innermost decorator (the line right above 'def').",
        )
    return None


def _set_once(function: Callable, definition: Step, name: str, setting: Any, usage: str) -> None:
    """Store a decorator's setting on a step, recording a second use of the decorator, which would replace the first."""
    if getattr(definition, name) is not None:
        _record_error(function, f"@{name} is applied twice, so the outer one would replace the inner one: {usage}.")
    setattr(definition, name, setting)


def _flag_if_uncalled(decorator: Callable, argument: Any, name: str, usage: str) -> Callable:
    """
    Flag the decorator a factory returns when its argument looks like the function it should decorate.

    Used without its call (``@repeat`` instead of ``@repeat(repetitions=3)``), a factory receives the step
    itself and returns a decorator that takes the step's place in the class: the flag lets the graph
    report it instead of silently losing the step.
    """
    if callable(argument):
        setattr(decorator, UNCALLED_DECORATOR_ATTR, f"@{name} is used without its call: write {usage}.")
    return decorator


def _marker_decorator(name: str, f: Callable | None, marker: type) -> Callable:
    """The decorator of ``@foreach()`` / ``@join()``; ``f`` is set when the parentheses were forgotten."""
    if f is not None:
        if not callable(f):
            raise TypeError(f"@{name} takes no arguments: write @{name}(), not @{name}({f!r}).")
        _record_error(f, f"@{name} must be called: write @{name}(), not @{name}.")
        return f

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, name)
        if definition is not None:
            setattr(definition, name, marker())
        return function

    return decorator


def step(function: Callable) -> Callable:
    """
    Mark a function as a step of a flow.

    ``@step`` must be the innermost decorator; the others go above it.

    Parameters
    ----------
    function : Callable
        The function to run as the step. It receives the step's inputs as
        positional arguments.

    Returns
    -------
    Callable
        A wrapper carrying the attributes ``step`` (its :class:`Step`) and ``is_step``.

    Raises
    ------
    TypeError
        When ``function`` is not a named callable (its name is the step's id), or is an
        ``async def`` function (steps are called in worker threads, never awaited).

    Examples
    --------
    >>> from nextpipe import FlowSpec, step
    >>> class Flow(FlowSpec):
    ...     @step
    ...     def double(data: int) -> int:
    ...         return data * 2
    """
    name = getattr(function, "__name__", None)
    if not callable(function) or not isinstance(name, str):
        raise TypeError(
            f"@step decorates a function defined with def, whose name is the step's id; got {function!r}. "
            "Wrap it in a named function: @step above 'def my_step(data): return ...'."
        )
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise TypeError(
            f"Step {name} is an 'async def' function, but steps are called in worker threads and never awaited. "
            "Declare it with 'def' and run the coroutine inside, e.g. 'return asyncio.run(fetch(data))'."
        )

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    wrapper.step = Step(function)
    wrapper.is_step = True
    return wrapper


def needs(predecessors: list[Callable]) -> Callable[[Callable], Callable]:
    """
    Declare the steps that a step runs after and whose results it receives.

    Parameters
    ----------
    predecessors : list of Callable
        Step functions of the same flow. Their results become the step's
        positional arguments, in this order.

    Returns
    -------
    Callable
        The decorator.
    """

    listed = list(predecessors) if isinstance(predecessors, list | tuple) else [predecessors]
    # In the class body, a step under @staticmethod is still the staticmethod object.
    listed = [p.__func__ if isinstance(p, staticmethod) else p for p in listed]

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "needs")
        if definition is not None:
            _set_once(function, definition, "needs", Needs(listed), "list every predecessor in one @needs")
        return function

    return _flag_if_uncalled(decorator, predecessors, "needs", "@needs(predecessors=[prepare])")


def optional(condition: Callable[[Step], bool]) -> Callable[[Callable], Callable]:
    """
    Run a step only when a condition holds.

    Parameters
    ----------
    condition : Callable[[Step], bool]
        Called with the step's :class:`Step` when the step becomes ready. When
        it returns a falsy value the step is skipped: it gets one succeeded
        node whose result is ``None``.

    Returns
    -------
    Callable
        The decorator.
    """

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "optional")
        if definition is None:
            return function
        if not callable(condition):
            _record_error(function, f"@optional needs a callable condition, got {condition!r}.")
        _set_once(function, definition, "optional", Optional(condition), "combine the conditions in one @optional")
        return function

    # A condition that is itself a step is the step under a bare @optional.
    argument = condition if isinstance(getattr(condition, "step", None), Step) else None
    return _flag_if_uncalled(decorator, argument, "optional", "@optional(condition=lambda step: ...)")


def repeat(repetitions: int) -> Callable[[Callable], Callable]:
    """
    Run a step several times on the same input.

    Every successor receives the list of the results as one argument.

    Parameters
    ----------
    repetitions : int
        How many times to run the step (1 or more).

    Returns
    -------
    Callable
        The decorator.
    """

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "repeat")
        if definition is None:
            return function
        if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
            _record_error(function, f"@repeat needs a whole number of repetitions of 1 or more, got {repetitions!r}.")
        _set_once(function, definition, "repeat", Repeat(repetitions), "use one @repeat with the total count")
        return function

    return _flag_if_uncalled(decorator, repetitions, "repeat", "@repeat(repetitions=3)")


def foreach(f: Callable | None = None) -> Callable[[Callable], Callable]:
    """
    Fan out over a step's result: each successor runs once per item of the returned list.

    Parameters
    ----------
    f : None
        Not to be given: the decorator is used as ``@foreach()``.

    Returns
    -------
    Callable
        The decorator.
    """
    return _marker_decorator("foreach", f, Foreach)


def join(f: Callable | None = None) -> Callable[[Callable], Callable]:
    """
    Collect a step's inputs: it runs once and receives the list of all of them.

    Each element of that list is itself the list of values one run would have
    received, so a join after a fan-out over three items receives
    ``[[r0], [r1], [r2]]``.

    Parameters
    ----------
    f : None
        Not to be given: the decorator is used as ``@join()``.

    Returns
    -------
    Callable
        The decorator.
    """
    return _marker_decorator("join", f, Join)


def app(
    app_id: str,
    instance_id: str = "",
    parameters: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
    input_type: InputType | None = None,
    full_result: bool = False,
    run_configuration: Any = None,
    polling_options: Any = SDK_DEFAULT_POLLING,
    bypass_result: Any = None,
    emit_live_logs: bool = False,
) -> Callable[[Callable], Callable]:
    """
    Run a Nextmv application instead of the step's function.

    The step's single input decides the run: an ``AppRunConfig``, an upstream
    ``RunResult``, a directory path (multi-file run) or any JSON value.

    Parameters
    ----------
    app_id : str
        Id of the application to run, on Nextmv Cloud or mapped to a local app directory.
    instance_id : str, default=""
        Id of the instance to run; empty for the application's default instance.
    parameters : dict, optional
        Deprecated alias of ``options``.
    options : dict, optional
        Run options. Values are converted to strings; ``None`` values are dropped.
    input_type : InputType, optional
        Deprecated and ignored: the input decides whether a run is JSON or multi-file.
    full_result : bool, default=False
        Return the whole ``nextmv.RunResult`` instead of its output.
    run_configuration : nextmv.RunConfiguration, optional
        Configuration sent with the run.
    polling_options : nextmv.PollingOptions, default=nextmv.DEFAULT_POLLING_OPTIONS
        How to poll for the result. With the SDK's default, the first poll is
        delayed by a random time below 5 s to spread many runs; options you
        pass are used as given.
    bypass_result : Any, optional
        When set, no run is made and the result is a succeeded ``RunResult``
        with this output (a directory's files are copied).
    emit_live_logs : bool, default=False
        Relay the run's logs, with the node id as step name, while it runs.

    Returns
    -------
    Callable
        The decorator.

    Raises
    ------
    ValueError
        When both ``parameters`` and ``options`` are given. Arguments of the wrong type or an
        empty ``app_id`` are reported, naming the step, when the flow is constructed.
    """
    if parameters is not None and options is not None:
        raise ValueError("You can only use either 'parameters' or 'options', not both.")
    if parameters is not None or input_type is not None:
        from nextmv.deprecated import deprecated

        if parameters is not None:
            deprecated(name="parameters", reason="Use 'options' instead")
            options = parameters
        if input_type is not None:
            deprecated(name="input_type", reason="The input type is derived from the step's input")

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "app")
        if definition is None:
            return function
        try:
            settings = App(
                app_id=app_id,
                instance_id=instance_id,
                input_type=input_type,
                options=options,
                full_result=full_result,
                run_configuration=run_configuration,
                polling_options=polling_options,
                bypass_result=bypass_result,
                emit_live_logs=emit_live_logs,
            )
        except (TypeError, ValueError) as error:
            _record_error(function, f"@app: {error}")
            return function
        _set_once(function, definition, "app", settings, "a step runs one app; declare one app step per app")
        definition.type = StepType.APP
        return function

    return _flag_if_uncalled(decorator, app_id, "app", '@app(app_id="my-app")')


class Cache:
    """
    The run cache settings of an app step, set by ``@cache``.

    Parameters
    ----------
    enabled : bool
        Whether the step uses the run cache.
    refresh : bool
        Whether the step makes a fresh run (and stores it) instead of reusing one.
    """

    def __init__(self, enabled: bool, refresh: bool):
        self.enabled = enabled
        self.refresh = refresh

    def __repr__(self) -> str:
        return f"StepCache(enabled={self.enabled}, refresh={self.refresh})"


def cache(f: Callable | None = None, *, enabled: bool = True, refresh: bool = False) -> Callable[[Callable], Callable]:
    """
    Reuse an app step's succeeded run made with the same inputs instead of making a new one.

    The run's cache key covers the app, the instance, the options, the run
    configuration, the input and the app's code (see the user guide's page on
    the run cache). ``Configuration(cache=True)`` turns the cache on for every
    app step; ``@cache`` decides per step.

    Parameters
    ----------
    f : None
        Not to be given: the decorator is used as ``@cache()``.
    enabled : bool, default=True
        ``False`` keeps the step out of a flow-wide cache (e.g. a randomized app).
    refresh : bool, default=False
        Make a fresh run even when a stored one matches, and store it in place of the old one.

    Returns
    -------
    Callable
        The decorator.

    Raises
    ------
    TypeError
        When an argument is given by position.
    """
    if callable(f):
        _record_error(f, "@cache must be called: write @cache(), not @cache.")
        return f
    if f is not None:
        raise TypeError(f"@cache takes keyword arguments only, e.g. @cache(refresh=True); got {f!r}.")

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "cache")
        if definition is None:
            return function
        for name, value in (("enabled", enabled), ("refresh", refresh)):
            if not isinstance(value, bool):
                _record_error(function, f"@cache needs {name}=True or {name}=False, got {value!r}.")
        definition.cache = Cache(enabled=enabled, refresh=refresh)
        return function

    return decorator


# Control of a node's execution: retries, time limits, tolerated failures, concurrency limits.


class Retry:
    """
    The retry policy of a step, set by ``@retry``.

    Parameters
    ----------
    attempts : int
        Most attempts of a node, the first one included.
    delay : float
        Seconds before the second attempt.
    backoff : float
        Factor applied to the delay after each further failed attempt.
    max_delay : float or None
        Longest delay, in seconds; ``None`` for no cap.
    jitter : float
        Relative spread of each delay: a delay ``d`` becomes a random value in ``[d * (1 - jitter), d * (1 + jitter)]``.
    retry_on : tuple
        Exception types and predicates ``f(error) -> bool``; a failure is retried when it matches any of them.
    """

    def __init__(
        self,
        attempts: int,
        delay: float,
        backoff: float,
        max_delay: float | None,
        jitter: float,
        retry_on: tuple,
    ):
        self.attempts = attempts
        self.delay = delay
        self.backoff = backoff
        self.max_delay = max_delay
        self.jitter = jitter
        self.retry_on = retry_on

    def __repr__(self) -> str:
        return f"StepRetry({self.attempts})"


class Timeout:
    """
    The time limit of each attempt of a step's nodes, set by ``@timeout``.

    Parameters
    ----------
    seconds : float
        Most seconds an attempt may run.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"StepTimeout({self.seconds})"


class AllowFailure:
    """Marker set by ``@allow_failure``: a failed node does not fail the flow; its successors receive ``None``."""

    def __repr__(self) -> str:
        return "StepAllowFailure()"


class Concurrency:
    """
    The most nodes of a step that run at once, set by ``@concurrency``.

    Parameters
    ----------
    limit : int
        The limit (1 or more).
    """

    def __init__(self, limit: int):
        self.limit = limit

    def __repr__(self) -> str:
        return f"StepConcurrency({self.limit})"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # NaN is no number


def _retry_errors(attempts: Any, delay: Any, backoff: Any, max_delay: Any, jitter: Any, retry_on: tuple) -> list[str]:
    errors = []
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        errors.append(f"@retry needs a whole number of attempts of 1 or more (the first included), got {attempts!r}.")
    if not _is_number(delay) or delay < 0 or delay == float("inf"):
        errors.append(f"@retry needs a delay of 0 seconds or more, got {delay!r}.")
    if not _is_number(backoff) or backoff < 1 or backoff == float("inf"):
        errors.append(f"@retry needs a backoff factor of 1 or more (1 keeps the delay constant), got {backoff!r}.")
    if max_delay is not None and (not _is_number(max_delay) or max_delay < 0):
        errors.append(f"@retry needs a max_delay of 0 seconds or more, or None, got {max_delay!r}.")
    if not _is_number(jitter) or not 0 <= jitter <= 1:
        errors.append(f"@retry needs a jitter between 0 and 1 (a fraction of the delay), got {jitter!r}.")
    for condition in retry_on:
        if not (isinstance(condition, type) and issubclass(condition, BaseException)) and (
            isinstance(condition, type) or not callable(condition)
        ):
            errors.append(
                f"@retry's retry_on takes exception types and predicates f(error) -> bool, got {condition!r}."
            )
    return errors


def retry(
    attempts: int = 3,
    delay: float = 1.0,
    backoff: float = 2.0,
    max_delay: float | None = 60.0,
    jitter: float = 0.0,
    retry_on: Any = Exception,
) -> Callable[[Callable], Callable]:
    """
    Retry a step's node when it fails.

    Each node is retried on its own (one failed item of a fan-out is retried
    alone); for an app step each attempt is a new run, and the node keeps the
    ids of all of them (``node.run_ids``). While it waits for its next attempt
    the node stays ``running`` and holds no worker thread.

    Parameters
    ----------
    attempts : int, default=3
        Most attempts, the first one included (1 means no retry).
    delay : float, default=1.0
        Seconds between the first failure and the second attempt.
    backoff : float, default=2.0
        Exponential backoff: each further delay is the previous one times this
        factor (1 for a constant delay).
    max_delay : float or None, default=60.0
        Cap of the delay, in seconds; ``None`` for no cap.
    jitter : float, default=0.0
        Randomness of each delay, as a fraction: ``0.2`` draws it uniformly
        within 20 % of its value either side, so that many nodes failing
        together do not retry together.
    retry_on : type, Callable or sequence of them, default=Exception
        Which failures are retried: exception types (``AppRunError``,
        ``requests.RequestException``, ``StepTimeoutError``, ...) and
        predicates ``f(error) -> bool``; a failure matching any is retried.
        Others fail the node at once.

    Returns
    -------
    Callable
        The decorator.

    Examples
    --------
    >>> from nextpipe import FlowSpec, app, retry, step
    >>> from nextpipe.errors import AppRunError
    >>> class Flow(FlowSpec):
    ...     @retry(attempts=3, delay=5.0, retry_on=AppRunError)
    ...     @app(app_id="routing")
    ...     @step
    ...     def solve(data: dict) -> None:
    ...         pass
    """
    conditions = tuple(retry_on) if isinstance(retry_on, list | tuple) else (retry_on,)

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "retry")
        if definition is None:
            return function
        for error in _retry_errors(attempts, delay, backoff, max_delay, jitter, conditions):
            _record_error(function, error)
        retry_setting = Retry(attempts, delay, backoff, max_delay, jitter, conditions)
        _set_once(function, definition, "retry", retry_setting, "keep one @retry with the settings you want")
        return function

    return _flag_if_uncalled(decorator, attempts, "retry", "@retry(attempts=3)")


def timeout(seconds: float) -> Callable[[Callable], Callable]:
    """
    Limit how long each attempt of a step's nodes may run.

    At the limit the attempt fails with :class:`nextpipe.errors.StepTimeoutError`
    (retried by ``@retry`` like any failure). An app step's run is canceled on
    the platform. A Python step cannot be stopped from outside: its node is
    marked failed and abandoned at once (the flow goes on without it, its late
    result is ignored, its worker thread is replaced), and the function can
    stop early by checking :func:`nextpipe.cancelled`.

    Parameters
    ----------
    seconds : float
        Most seconds per attempt (more than 0), counted from the attempt's start.

    Returns
    -------
    Callable
        The decorator.
    """

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "timeout")
        if definition is None:
            return function
        if not _is_number(seconds) or seconds <= 0 or seconds == float("inf"):
            _record_error(function, f"@timeout needs a number of seconds above 0, got {seconds!r}.")
        _set_once(function, definition, "timeout", Timeout(seconds), "keep one @timeout with the limit you want")
        return function

    return _flag_if_uncalled(decorator, seconds, "timeout", "@timeout(seconds=60)")


def allow_failure(f: Callable | None = None) -> Callable[[Callable], Callable]:
    """
    Let a step's nodes fail without failing the flow.

    A failed node (after its retries) ends ``failed`` with result ``None``; its
    successors receive ``None`` in its place (a ``@join`` sees ``None``
    entries; a failed ``@foreach`` node fans out over nothing) and the flow
    goes on.

    Parameters
    ----------
    f : None
        Not to be given: the decorator is used as ``@allow_failure()``.

    Returns
    -------
    Callable
        The decorator.
    """
    return _marker_decorator("allow_failure", f, AllowFailure)


def concurrency(limit: int) -> Callable[[Callable], Callable]:
    """
    Run at most ``limit`` nodes of a step at once; the others wait their turn.

    Waiting nodes stay ``pending`` and hold no worker thread, so they never
    keep other steps from running. For a limit shared by every step running
    the same application, see ``Configuration.app_concurrency``.

    Parameters
    ----------
    limit : int
        Most nodes running at once (1 or more).

    Returns
    -------
    Callable
        The decorator.
    """

    def decorator(function: Callable) -> Callable:
        definition = _step_of(function, "concurrency")
        if definition is None:
            return function
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            _record_error(function, f"@concurrency needs a whole-number limit of 1 or more, got {limit!r}.")
        _set_once(
            function, definition, "concurrency", Concurrency(limit), "keep one @concurrency with the limit you want"
        )
        return function

    return _flag_if_uncalled(decorator, limit, "concurrency", "@concurrency(limit=3)")

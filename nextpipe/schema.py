"""Inputs of app steps: per-run options, names and configurations."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dataclasses_json import DataClassJsonMixin, config
from marshmallow import fields

if TYPE_CHECKING:
    import nextmv
else:

    class _LazyNextmv:
        """Stands for the ``nextmv`` module in annotations until dataclasses-json resolves them.

        dataclasses-json evaluates the field annotations (``nextmv.RunConfiguration | None``) when it decodes or
        builds a schema; importing ``nextmv`` only then keeps ``import nextpipe`` from importing it.
        """

        def __getattr__(self, name: str) -> Any:
            import nextmv

            return getattr(nextmv, name)

    nextmv = _LazyNextmv()


@dataclass
class AppOption(DataClassJsonMixin):
    """
    One option of an app run.

    Parameters
    ----------
    name : str
        The option's name.
    value : Any
        The option's value; sent as a string.
    """

    name: str
    value: Any = field(metadata=config(mm_field=fields.Raw(required=True, allow_none=True)))


def _decode_options(value: Any) -> Any:
    if isinstance(value, list):
        return [AppOption.from_dict(v) if isinstance(v, dict) else v for v in value]
    return value


def _decode_run_configuration(value: Any) -> Any:
    if isinstance(value, dict):
        return nextmv.RunConfiguration.from_dict(value)
    return value


def _encode_run_configuration(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def _schema_field(name: str) -> fields.Field:
    """The marshmallow field of ``schema()`` for a field that ``to_dict`` encodes and ``from_dict`` decodes itself."""
    return fields.Function(lambda obj: obj.to_dict()[name], lambda value: value, allow_none=True)


@dataclass
class AppRunConfig(DataClassJsonMixin):
    """
    The input of one run of an app step, with settings that override the step's.

    Return a list of these from a ``@foreach`` step to run an app step once
    per configuration.

    Parameters
    ----------
    input : Any
        The run's input.
    options : list of AppOption or dict, default=[]
        Options merged over the ``@app`` decorator's options.
    name : str, optional
        The run's name, instead of the default one.
    description : str, optional
        The run's description, instead of the default one.
    run_configuration : nextmv.RunConfiguration, optional
        Replaces the decorator's run configuration as a whole.
    instance_id : str, optional
        Replaces the decorator's instance id.

    Raises
    ------
    TypeError
        When ``options`` is neither a list of :class:`AppOption` nor a dict with string keys.
    """

    input: Any = field(default=None, metadata=config(mm_field=_schema_field("input")))
    options: list[AppOption] | dict[str, Any] = field(
        default_factory=list, metadata=config(decoder=_decode_options, mm_field=_schema_field("options"))
    )
    name: str | None = None
    description: str | None = None
    # A string annotation: evaluating it would import nextmv with nextpipe.
    run_configuration: "nextmv.RunConfiguration | None" = field(
        default=None,
        metadata=config(
            encoder=_encode_run_configuration,
            decoder=_decode_run_configuration,
            mm_field=_schema_field("run_configuration"),
        ),
    )
    instance_id: str | None = None

    def __post_init__(self) -> None:
        options = self.options
        if isinstance(options, dict):
            bad = [key for key in options if not isinstance(key, str)]
        elif isinstance(options, list):
            bad = [option for option in options if not isinstance(option, AppOption)]
        else:
            bad = [options]
        if bad:
            raise TypeError(
                "AppRunConfig.options must be a list of AppOption(name, value) or a dict of option names to "
                f"values, got {type(options).__name__} {options!r} ({bad[0]!r} does not fit)."
            )

    def get_options(self) -> dict[str, str]:
        """
        Return the options as a dictionary of strings.

        Returns
        -------
        dict of str to str
            Option names mapped to their values as strings; ``None`` values are left out.
        """
        if isinstance(self.options, dict):
            pairs = self.options.items()
        else:
            pairs = ((o.name, o.value) for o in self.options)
        return {name: str(value) for name, value in pairs if value is not None}

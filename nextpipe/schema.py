"""Inputs of app steps: per-run options, names and configurations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._dataclass_json import DataClassJsonMixin

if TYPE_CHECKING:
    import nextmv


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
    value: Any


def _decode_options(value: Any) -> Any:
    if isinstance(value, list):
        return [AppOption.from_dict(v) if isinstance(v, dict) else v for v in value]
    return value


def _decode_run_configuration(value: Any) -> Any:
    if isinstance(value, dict):
        import nextmv

        return nextmv.RunConfiguration.from_dict(value)
    return value


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
    """

    input: Any = None
    options: list[AppOption] | dict[str, Any] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    run_configuration: nextmv.RunConfiguration | None = None
    instance_id: str | None = None

    _field_decoders = {"options": _decode_options, "run_configuration": _decode_run_configuration}

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

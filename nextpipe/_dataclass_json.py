"""JSON round trips for nextpipe's small configuration dataclasses (dataclasses-json's API, without its import cost)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="DataClassJsonMixin")


def _encode(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


class DataClassJsonMixin:
    """Adds ``to_dict``/``from_dict``/``to_json``/``from_json`` to a dataclass."""

    # Field name -> function turning the field's JSON value back into its Python type.
    _field_decoders: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """
        Convert to a dictionary of JSON-compatible values.

        Returns
        -------
        dict
            One key per field.
        """
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """
        Build an instance from a dictionary such as :meth:`to_dict` returns.

        Parameters
        ----------
        data : dict
            Field values; missing fields take their defaults.

        Returns
        -------
        Self
            The new instance.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {}
        for name, value in data.items():
            if name in names:
                decoder = cls._field_decoders.get(name)
                kwargs[name] = decoder(value) if decoder is not None and value is not None else value
        return cls(**kwargs)

    def to_json(self, **kwargs: Any) -> str:
        """
        Serialize to a JSON string.

        Parameters
        ----------
        **kwargs
            Passed on to :func:`json.dumps`.

        Returns
        -------
        str
            The JSON text.
        """
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls: type[T], text: str | bytes) -> T:
        """
        Build an instance from JSON text such as :meth:`to_json` returns.

        Parameters
        ----------
        text : str or bytes
            The JSON text.

        Returns
        -------
        Self
            The new instance.
        """
        return cls.from_dict(json.loads(text))

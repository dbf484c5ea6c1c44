"""SPEC sections 4 and 5: Configuration, AppOption and AppRunConfig (JSON round trips, options) and utils helpers."""

from __future__ import annotations

import json

import nextmv
import pytest

from nextpipe import AppOption, AppRunConfig, Configuration
from nextpipe.utils import convert_to_string_values, wrap_func

# ---------------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------------


def test_configuration_defaults() -> None:
    conf = Configuration()
    assert conf.thread_count == 0
    assert conf.max_step_inputs == 50
    assert conf.local_apps is None


def test_configuration_positional_and_keywords() -> None:
    conf = Configuration(4, 10)
    assert (conf.thread_count, conf.max_step_inputs) == (4, 10)
    conf = Configuration(max_step_inputs=3, thread_count=2, local_apps={"echo": "apps/echo"})
    assert conf.local_apps == {"echo": "apps/echo"}


@pytest.mark.parametrize(
    "conf",
    [Configuration(), Configuration(thread_count=3, max_step_inputs=7), Configuration(local_apps={"a": "/x"})],
)
def test_configuration_round_trips(conf: Configuration) -> None:
    assert Configuration.from_json(conf.to_json()) == conf
    assert Configuration.from_dict(conf.to_dict()) == conf
    data = json.loads(conf.to_json())
    assert data["thread_count"] == conf.thread_count
    assert data["max_step_inputs"] == conf.max_step_inputs
    assert conf.to_dict()["thread_count"] == conf.thread_count


def test_configuration_from_partial_dict_uses_defaults() -> None:
    conf = Configuration.from_dict({"thread_count": 5})
    assert conf == Configuration(thread_count=5, max_step_inputs=50)
    assert Configuration.from_json('{"max_step_inputs": 9}') == Configuration(max_step_inputs=9)


# ---------------------------------------------------------------------------------------------------------------------
# AppOption
# ---------------------------------------------------------------------------------------------------------------------


def test_app_option() -> None:
    option = AppOption("duration", 10)
    assert option.name == "duration" and option.value == 10
    assert AppOption(name="a", value="b") == AppOption("a", "b")
    assert option.to_dict() == {"name": "duration", "value": 10}
    assert json.loads(option.to_json()) == {"name": "duration", "value": 10}
    assert AppOption.from_json(option.to_json()) == option
    assert AppOption.from_dict(option.to_dict()) == option


# ---------------------------------------------------------------------------------------------------------------------
# AppRunConfig
# ---------------------------------------------------------------------------------------------------------------------


def test_app_run_config_defaults() -> None:
    config = AppRunConfig(input={"a": 1})
    assert config.input == {"a": 1}
    assert config.options == []
    assert config.name is None
    assert config.description is None
    assert config.run_configuration is None
    assert config.instance_id is None
    assert config.get_options() == {}
    # the default list is not shared between instances
    assert AppRunConfig(input=1).options is not AppRunConfig(input=2).options


def test_get_options_from_list_of_app_options() -> None:
    config = AppRunConfig(
        input=None,
        options=[AppOption("duration", 10), AppOption("verbose", True), AppOption("gone", None), AppOption("s", "x")],
    )
    assert config.get_options() == {"duration": "10", "verbose": "True", "s": "x"}
    assert all(isinstance(v, str) for v in config.get_options().values())


def test_get_options_from_dict() -> None:
    config = AppRunConfig(input=None, options={"duration": 1.5, "gone": None, "flag": False, "s": "y"})
    assert config.get_options() == {"duration": "1.5", "flag": "False", "s": "y"}


def test_app_run_config_round_trip_with_option_list() -> None:
    config = AppRunConfig(
        input={"items": [1, 2, {"n": None}]},
        options=[AppOption("duration", 10), AppOption("mode", "fast")],
        name="my run",
        description="a description",
        instance_id="prod",
    )
    text = config.to_json()
    data = json.loads(text)
    assert data["options"] == [{"name": "duration", "value": 10}, {"name": "mode", "value": "fast"}]
    assert data["input"] == {"items": [1, 2, {"n": None}]}
    back = AppRunConfig.from_json(text)
    assert back == config
    assert all(isinstance(o, AppOption) for o in back.options)
    assert back.get_options() == {"duration": "10", "mode": "fast"}
    assert AppRunConfig.from_dict(config.to_dict()) == config


def test_app_run_config_round_trip_with_option_dict() -> None:
    config = AppRunConfig(input="text", options={"a": 1, "b": "two"})
    back = AppRunConfig.from_json(config.to_json())
    assert back == config
    assert back.get_options() == {"a": "1", "b": "two"}
    assert AppRunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "run_configuration",
    [
        nextmv.RunConfiguration(execution_class="6c9500mb870s"),
        nextmv.RunConfiguration(queuing=nextmv.RunQueuing(priority=3, disabled=False)),
        nextmv.RunConfiguration(
            execution_class="8c16gb12h",
            secrets_collection_id="secrets-1",
            queuing=nextmv.RunQueuing(priority=1, disabled=True),
        ),
    ],
)
def test_run_configuration_survives_the_json_round_trip(run_configuration) -> None:
    config = AppRunConfig(input={"x": 1}, run_configuration=run_configuration, instance_id="i")
    text = config.to_json()
    json.loads(text)  # valid JSON
    back = AppRunConfig.from_json(text)
    assert isinstance(back.run_configuration, nextmv.RunConfiguration)
    assert back.run_configuration == run_configuration
    assert back == config
    from_dict = AppRunConfig.from_dict(config.to_dict())
    assert isinstance(from_dict.run_configuration, nextmv.RunConfiguration)
    assert from_dict.run_configuration == run_configuration


def test_run_configuration_json_holds_its_fields() -> None:
    run_configuration = nextmv.RunConfiguration(
        execution_class="6c9500mb870s", queuing=nextmv.RunQueuing(priority=4, disabled=False)
    )
    data = json.loads(AppRunConfig(input=None, run_configuration=run_configuration).to_json())
    assert data["run_configuration"]["execution_class"] == "6c9500mb870s"
    assert data["run_configuration"]["queuing"]["priority"] == 4


def test_app_run_config_from_minimal_json() -> None:
    back = AppRunConfig.from_json('{"input": {"a": 1}}')
    assert back == AppRunConfig(input={"a": 1})
    assert back.get_options() == {}


# ---------------------------------------------------------------------------------------------------------------------
# utils
# ---------------------------------------------------------------------------------------------------------------------


def test_convert_to_string_values_drops_none() -> None:
    source = {"a": 1, "b": None, "c": "x", "d": 2.5, "e": True, "f": [1]}
    result = convert_to_string_values(source)
    assert result == {"a": "1", "c": "x", "d": "2.5", "e": "True", "f": "[1]"}
    assert source["a"] == 1 and "b" in source  # the input is not modified
    assert result is not source


def test_convert_to_string_values_preserve_none() -> None:
    result = convert_to_string_values({"a": 1, "b": None}, preserve_none=True)
    assert result == {"a": "1", "b": None}
    assert convert_to_string_values({}) == {}


def test_wrap_func() -> None:
    def f(a, b, *, c=0, d=0):
        return (a, b, c, d)

    g = wrap_func(f)
    assert g(((1, 2), {"c": 3})) == (1, 2, 3, 0)
    assert g(([1, 2], {})) == (1, 2, 0, 0)
    assert g(((1,), {"b": 5, "d": 4})) == (1, 5, 0, 4)
    with pytest.raises(TypeError):
        g(((), {}))

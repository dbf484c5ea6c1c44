"""The platform emulator, exercised through the real ``nextmv`` SDK."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import nextmv
import pytest
import requests
from nextmv import cloud
from platform_emulator import DEFAULT_APP, PlatformEmulator, RunFailure


def fast_polling(max_duration: float = 10) -> nextmv.PollingOptions:
    """Tight polling: a fresh object each time (``run_logs_with_polling`` mutates the one it gets)."""
    return nextmv.PollingOptions(initial_delay=0, delay=0.01, backoff=0, jitter=0, max_duration=max_duration)


def multi_file_configuration() -> nextmv.RunConfiguration:
    return nextmv.RunConfiguration(
        format=nextmv.Format(
            format_input=nextmv.FormatInput(input_type=nextmv.ContentFormat.MULTI_FILE),
            format_output=nextmv.FormatOutput(output_type=nextmv.ContentFormat.MULTI_FILE),
        )
    )


@pytest.fixture
def emu() -> Iterator[PlatformEmulator]:
    with PlatformEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: PlatformEmulator) -> cloud.Client:
    return cloud.Client(api_key="dummy", url=emu.url)


@pytest.fixture
def app(client: cloud.Client) -> cloud.Application:
    return cloud.Application(client=client, id="echo")


def test_json_run_echoes_input_and_records_the_request(emu: PlatformEmulator, app: cloud.Application) -> None:
    run_id = app.new_run(
        input={"items": [1, 2]},
        instance_id="candidate",
        name="my run",
        description="a test",
        options={"duration": "3", "solver": {"kind": "fast"}},
    )
    result = app.run_result_with_polling(run_id, polling_options=fast_polling())

    assert result.id == run_id
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert result.metadata.error == ""
    assert result.metadata.application_instance_id == "candidate"
    assert result.output == {
        "options": {"duration": "3", "solver": '{"kind":"fast"}'},
        "solution": {"items": [1, 2]},
        "statistics": {"schema": "v1", "run": {"duration": 0.0}},
    }

    (post,) = emu.requests_for("POST", "/v1/applications/echo/runs")
    assert post.query == {"instance_id": "candidate"}
    assert post.headers["authorization"] == "Bearer dummy"
    assert "dummy" not in repr(post)
    assert post.json["input"] == {"items": [1, 2]}
    assert post.json["configuration"]["format"]["input"]["type"] == "json"
    assert post.route == "new_run" and post.status == 200

    run = emu.run(run_id)
    assert (run.app_id, run.instance_id, run.name, run.description) == ("echo", "candidate", "my run", "a test")
    assert run.options == {"duration": "3", "solver": '{"kind":"fast"}'}
    assert run.status == "succeeded" and not run.canceled
    assert emu.requests_for("GET", f"/v1/applications/echo/runs/{run_id}/metadata")
    assert emu.unrouted_requests() == []


def test_run_status_goes_queued_running_succeeded(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.set_app_behavior("echo", duration=0.2, queued_seconds=0.2)
    emu.hold_runs(True)
    run_id = app.new_run(input={})
    assert app.run_information(run_id).metadata.status_v2 == nextmv.StatusV2.queued
    emu.wait_for(lambda: emu.run(run_id).status == "running", timeout=2)
    assert app.run_information(run_id).metadata.status_v2 == nextmv.StatusV2.running  # held: stays running
    emu.hold_runs(False)
    result = app.run_result_with_polling(run_id, polling_options=fast_polling())
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert result.metadata.duration >= 200


def test_custom_handler_and_default_behavior(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.set_app_behavior(DEFAULT_APP, lambda input, options, files: {"solution": "default"}, duration=0)
    emu.set_app_behavior("double", lambda input, options, files: {"solution": input["x"] * 2})
    double = cloud.Application(client=app.client, id="double")

    assert double.run_result_with_polling(double.new_run(input={"x": 21}), fast_polling()).output == {"solution": 42}
    assert app.run_result_with_polling(app.new_run(input={"x": 1}), fast_polling()).output == {"solution": "default"}
    assert [r.app_id for r in emu.runs.values()] == ["double", "echo"]


def test_multi_file_input_and_output(emu: PlatformEmulator, app: cloud.Application, tmp_path: pathlib.Path) -> None:
    inputs = tmp_path / "inputs"
    (inputs / "data").mkdir(parents=True)
    (inputs / "a.csv").write_text("x,y\n1,2\n")
    (inputs / "data" / "b.json").write_text('{"b": true}')

    run_id = app.new_run(input_dir_path=str(inputs), configuration=multi_file_configuration())
    out_dir = tmp_path / "out"
    result = app.run_result_with_polling(run_id, polling_options=fast_polling(), output_dir_path=str(out_dir))

    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert result.metadata.format.format_output.output_type == nextmv.ContentFormat.MULTI_FILE
    assert result.output == {"url": f"{emu.url}/download/{run_id}/output"}  # the SDK leaves the URL there
    assert (out_dir / "a.csv").read_text() == "x,y\n1,2\n"
    assert (out_dir / "data" / "b.json").read_text() == '{"b": true}'

    run = emu.run(run_id)
    assert run.input is None and run.input_format == "multi-file"
    assert run.input_files == {"a.csv": b"x,y\n1,2\n", "data/b.json": b'{"b": true}'}
    (upload_id,) = emu.uploads
    assert run.upload_id == upload_id
    (put,) = emu.requests_for("PUT", "/upload/")
    assert "authorization" not in put.headers
    (post,) = [r for r in emu.requests_for("POST", "/v1/applications/echo/runs") if r.route == "new_run"]
    assert post.json["upload_id"] == upload_id and "input" not in post.json
    assert emu.requests_for("GET", f"/v1/applications/echo/runs/{run_id}/output")[0].query == {"format": "url"}


def test_multi_file_input_without_configuration_is_resolved_by_the_sdk(
    emu: PlatformEmulator, app: cloud.Application, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f.txt").write_text("hello")
    run_id = app.new_run(input_dir_path=str(tmp_path / "in"))
    result = app.run_result_with_polling(run_id, fast_polling(), output_dir_path=str(tmp_path / "out"))
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert (tmp_path / "out" / "f.txt").read_text() == "hello"


def test_json_input_with_multi_file_output(
    emu: PlatformEmulator, app: cloud.Application, tmp_path: pathlib.Path
) -> None:
    def solve(input: Any, options: dict[str, str], files: dict[str, bytes]) -> dict[str, bytes]:
        return {"solutions/plan.csv": f"n\n{input['n']}\n".encode(), "statistics.json": b"{}"}

    emu.set_app_behavior("echo", solve)
    run_id = app.new_run(input={"n": 7})
    result = app.run_result_with_polling(run_id, fast_polling(), output_dir_path=str(tmp_path))
    assert result.metadata.status_v2 == nextmv.StatusV2.succeeded
    assert (tmp_path / "solutions" / "plan.csv").read_text() == "n\n7\n"
    assert (tmp_path / "statistics.json").read_text() == "{}"


def test_text_input_is_uploaded(emu: PlatformEmulator, app: cloud.Application) -> None:
    run_id = app.new_run(input="plain text")
    result = app.run_result_with_polling(run_id, fast_polling())
    assert result.output["solution"] == "plain text"
    run = emu.run(run_id)
    assert run.input == "plain text" and run.input_format == "text" and run.uploaded == b"plain text"


def test_failed_run_returns_a_result_with_the_error(emu: PlatformEmulator, app: cloud.Application) -> None:
    def broken(input: Any, options: dict[str, str], files: dict[str, bytes]) -> Any:
        raise RunFailure("infeasible: no vehicle left")

    emu.set_app_behavior("echo", broken, logs=["loading", "solving"])
    run_id = app.new_run(input={})
    result = app.run_result_with_polling(run_id, fast_polling())
    assert result.metadata.status_v2 == nextmv.StatusV2.failed
    assert result.metadata.error == "infeasible: no vehicle left"
    assert result.error_log is not None and result.error_log.error == "infeasible: no vehicle left"
    assert result.error_log.stderr == "loading\nsolving"
    assert result.output is None
    assert emu.run(run_id).status == "failed"


def test_failed_multi_file_run_does_not_raise(
    emu: PlatformEmulator, app: cloud.Application, tmp_path: pathlib.Path
) -> None:
    emu.set_app_behavior("echo", lambda input, options, files: ValueError("bad file"), output_format="multi-file")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "f.txt").write_text("x")
    run_id = app.new_run(input_dir_path=str(tmp_path / "in"))
    result = app.run_result_with_polling(run_id, fast_polling(), output_dir_path=str(tmp_path / "out"))
    assert result.metadata.status_v2 == nextmv.StatusV2.failed
    assert result.metadata.error == "bad file"
    assert list((tmp_path / "out").iterdir()) == []


def test_handler_returning_something_else_fails_the_run(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.set_app_behavior("echo", lambda input, options, files: [1, 2])
    result = app.run_result_with_polling(app.new_run(input={}), fast_polling())
    assert result.metadata.status_v2 == nextmv.StatusV2.failed
    assert "JSON object" in result.metadata.error


def test_cancel_held_run(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.hold_runs(True)
    run_id = app.new_run(input={})
    time.sleep(0.1)  # longer than the run's duration: only the hold keeps it running
    assert app.run_information(run_id).metadata.status_v2 == nextmv.StatusV2.running
    assert emu.run(run_id).held

    app.cancel_run(run_id)
    result = app.run_result_with_polling(run_id, fast_polling())
    assert result.metadata.status_v2 == nextmv.StatusV2.canceled
    run = emu.run(run_id)
    assert run.canceled and run.cancel_requests == 1 and run.status == "canceled"
    (patch,) = emu.requests_for("PATCH")
    assert patch.path == f"/v1/applications/echo/runs/{run_id}/cancel" and patch.status == 204


def test_cancel_after_success_changes_nothing(emu: PlatformEmulator, app: cloud.Application) -> None:
    run_id = app.new_run(input={})
    app.run_result_with_polling(run_id, fast_polling())
    app.cancel_run(run_id)
    run = emu.run(run_id)
    assert run.status == "succeeded" and not run.canceled and run.cancel_requests == 1


def test_release_held_runs(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.hold_runs(True, app_id="echo")
    other = cloud.Application(client=app.client, id="other")
    held_id, free_id = app.new_run(input={}), other.new_run(input={})
    assert other.run_result_with_polling(free_id, fast_polling()).metadata.status_v2 == nextmv.StatusV2.succeeded
    with pytest.raises(TimeoutError):
        app.run_result_with_polling(held_id, fast_polling(max_duration=0.15))
    emu.release_runs()
    assert app.run_result_with_polling(held_id, fast_polling()).metadata.status_v2 == nextmv.StatusV2.succeeded


def test_live_logs(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.set_app_behavior("echo", duration=0.2, logs=["one", "two", "three", "four"])
    run_id = app.new_run(input={})
    seen: list[str] = []
    logs = app.run_logs_with_polling(run_id, polling_options=fast_polling(), log_func=lambda e: seen.append(e.log))
    assert [entry.log for entry in logs] == ["one", "two", "three", "four"]
    assert seen == ["one", "two", "three", "four"]
    live = emu.requests_for("GET", f"/v1/applications/echo/runs/{run_id}/logs/live")
    assert len(live) >= 2
    assert "since" in live[-1].query  # later polls continue from the page token
    assert app.run_logs(run_id).log == "one\ntwo\nthree\nfour"


def test_fail_next_raises_http_error_then_recovers(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.fail_next(1, status=500, path_prefix="/v1/applications/echo/runs")
    with pytest.raises(requests.HTTPError) as raised:
        app.new_run(input={})
    assert raised.value.response.status_code == 500
    assert raised.value.response.json() == {"error": "injected failure"}
    assert emu.runs == {}

    run_id = app.new_run(input={})
    emu.fail_next(2, status=502, path_regex=r"/metadata$")
    for _ in range(2):
        with pytest.raises(requests.HTTPError):
            app.run_information(run_id)
    assert app.run_result_with_polling(run_id, fast_polling()).metadata.status_v2 == nextmv.StatusV2.succeeded
    assert [r.status for r in emu.requests_for("GET", f"/v1/applications/echo/runs/{run_id}/metadata")][:2] == [
        502,
        502,
    ]


def test_fail_next_ignores_other_paths(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.fail_next(1, status=500, path_prefix="/v1/internal/")
    run_id = app.new_run(input={})
    assert app.run_result_with_polling(run_id, fast_polling()).output is not None
    with pytest.raises(requests.HTTPError):
        app.client.request(method="PUT", endpoint="v1/internal/applications/a/runs/r/flow", payload={"x": 1})
    assert emu.flow_updates == []


def test_down_and_not_listening(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.set_down(True)
    with pytest.raises(requests.HTTPError) as raised:
        app.new_run(input={})
    assert raised.value.response.status_code == 503
    emu.set_down(False)

    port = emu.port
    emu.stop_listening()
    assert not emu.listening
    with pytest.raises(requests.ConnectionError):
        app.new_run(input={})
    emu.start_listening()
    assert emu.port == port
    run_id = app.new_run(input={"again": True})
    assert app.run_result_with_polling(run_id, fast_polling()).output["solution"] == {"again": True}


def test_drop_next_raises_connection_error(emu: PlatformEmulator, app: cloud.Application) -> None:
    emu.drop_next(1, path_prefix="/v1/applications/echo/runs", method="POST")
    with pytest.raises(requests.ConnectionError):
        app.new_run(input={})
    assert emu.requests[-1].status == 0
    assert app.new_run(input={})


def test_delay_makes_the_client_time_out(emu: PlatformEmulator) -> None:
    impatient = cloud.Client(api_key="dummy", url=emu.url, timeout=0.1)
    emu.set_delay(1.0, "/v1/internal/")
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        impatient.request(method="PUT", endpoint="v1/internal/applications/a/runs/r/flow", payload={"n": 1})
    assert time.monotonic() - started < 0.8
    emu.set_delay(0, "/v1/internal/")
    impatient.request(method="PUT", endpoint="v1/internal/applications/a/runs/r/flow", payload={"n": 2})
    assert {"n": 2} in emu.flow_updates
    assert len(emu.requests_for("PUT", "/v1/internal/")) == 2  # recorded on arrival, the delayed one too


def test_flow_updates_are_recorded(emu: PlatformEmulator, client: cloud.Client) -> None:
    for state in ("running", "succeeded"):
        response = client.request(
            method="PUT",
            endpoint="v1/internal/applications/a/runs/r/flow",
            payload={"graph": {"steps": []}, "state": state},
        )
        assert response.status_code == 204
    assert emu.flow_updates == [
        {"graph": {"steps": []}, "state": "running"},
        {"graph": {"steps": []}, "state": "succeeded"},
    ]
    assert [(u.app_id, u.run_id) for u in emu.flow_update_records] == [("a", "r"), ("a", "r")]


def test_unknown_endpoints_answer_404_and_are_recorded(emu: PlatformEmulator, client: cloud.Client) -> None:
    with pytest.raises(requests.HTTPError) as raised:
        client.request(method="GET", endpoint="v1/applications/echo/versions")
    assert raised.value.response.status_code == 404
    assert "no emulated endpoint" in raised.value.response.json()["error"]
    with pytest.raises(requests.HTTPError) as raised:
        client.request(method="DELETE", endpoint="v1/applications/echo/runs/x/cancel")
    assert raised.value.response.status_code == 405
    with pytest.raises(requests.HTTPError) as raised:
        client.request(method="GET", endpoint="v1/applications/echo/runs/nope/metadata")
    assert raised.value.response.status_code == 404
    assert [(r.method, r.path) for r in emu.unrouted_requests()] == [
        ("GET", "/v1/applications/echo/versions"),
        ("DELETE", "/v1/applications/echo/runs/x/cancel"),
    ]


def test_authorization_is_required() -> None:
    with PlatformEmulator(api_key="secret") as emu:
        assert requests.get(f"{emu.url}/v1/applications/echo", timeout=5).status_code == 401
        wrong = cloud.Application(client=cloud.Client(api_key="other", url=emu.url), id="echo")
        with pytest.raises(requests.HTTPError) as raised:
            wrong.new_run(input={})
        assert raised.value.response.status_code == 401
        right = cloud.Application.get(client=cloud.Client(api_key="secret", url=emu.url), id="echo")
        assert right.id == "echo"


def test_environment_variables_configure_the_sdk(emu: PlatformEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXTMV_API_KEY", "from-env")
    monkeypatch.setenv("NEXTMV_ENDPOINT", emu.url)
    app = cloud.Application(client=cloud.Client(), id="echo")
    run_id = app.new_run(input={"env": 1})
    assert app.run_result_with_polling(run_id, fast_polling()).output["solution"] == {"env": 1}
    assert emu.requests[0].headers["authorization"] == "Bearer from-env"


def test_wait_for_runs_and_reset(emu: PlatformEmulator, app: cloud.Application) -> None:
    app.new_run(input={})
    app.new_run(input={})
    assert len(emu.wait_for_runs(2, timeout=1)) == 2
    with pytest.raises(TimeoutError):
        emu.wait_for_runs(3, timeout=0.05)
    emu.reset()
    assert emu.runs == {} and emu.requests == [] and emu.flow_updates == []

"""What a person running playlog meets first (issue 12, items 3, 4, 6, 7):
`playlog health` for probes, grpcurl's health check with auth on, one-line
errors instead of tracebacks, a stderr that stays JSON, the metrics an on-call
engineer expects, and the wheel the container installs, in a fresh venv."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from playlog import cli
from playlog.auth import hash_token, new_token
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import channel_service_pb2_grpc as ch_grpc
from playlog.v1 import execution_window_service_pb2 as ew
from playlog.v1 import execution_window_service_pb2_grpc as ew_grpc
from playlog.v1 import schedule_day_service_pb2 as sd
from playlog.v1 import schedule_day_service_pb2_grpc as sd_grpc
from tests.builders import DAY, HOUR, T0, date_of, day_of_entries, schedule_day
from tests.test_served_process import GRPCURL, Served, free_port

PLAYLOG = [sys.executable, "-m", "playlog"]
REPO = Path(__file__).resolve().parent.parent


def run(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PLAYLOG, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def stop(server: Served) -> None:
    if server.proc.poll() is None:
        server.proc.kill()
        server.proc.wait()


@pytest.fixture
def authed_server(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    token = new_token()
    auth = tmp_path / "auth.toml"
    auth.write_text(f'[[principal]]\nname = "r"\nroles = ["reader"]\ntoken_sha256 = "{hash_token(token)}"\n')
    server = Served(tmp_path / "data", free_port(), "--auth-file", str(auth))
    yield server, token
    stop(server)


# -- item 3: health ---------------------------------------------------------------------------


def test_playlog_health_exit_status_serving_unknown_service_and_unreachable(
    authed_server: tuple[Served, str],
) -> None:
    server, _ = authed_server
    serving = run("health", "--server", server.address)
    assert (serving.returncode, serving.stdout.strip()) == (0, "SERVING"), serving.stderr
    unknown = run("health", "--server", server.address, "--service", "no.such.Service")
    assert unknown.returncode == 1
    assert "unknown service 'no.such.Service'" in unknown.stderr
    unreachable = run("health", "--server", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith("playlog health: cannot reach 127.0.0.1:")
    assert "Traceback" not in unreachable.stderr


def test_playlog_health_defaults_to_this_machine_at_playlog_listen(
    authed_server: tuple[Served, str],
) -> None:
    """The container's HEALTHCHECK runs `playlog health` with only the
    environment the server has (PLAYLOG_LISTEN=0.0.0.0:<port>)."""
    server, _ = authed_server
    port = server.address.rpartition(":")[2]
    env = {k: v for k, v in os.environ.items() if k != "PLAYLOG_SERVER"}
    env["PLAYLOG_LISTEN"] = f"0.0.0.0:{port}"
    probed = run("health", env=env)
    assert (probed.returncode, probed.stdout.strip()) == (0, "SERVING"), probed.stderr


def test_grpcurl_health_check_works_with_auth_on_without_a_token(authed_server: tuple[Served, str]) -> None:
    server, token = authed_server
    checked = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout) == {"status": "SERVING"}
    # The services themselves still need the token.
    refused = subprocess.run(
        [GRPCURL, "-plaintext", server.address, "playlog.v1.ChannelService/ListChannels"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
    allowed = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-H",
            f"authorization: Bearer {token}",
            server.address,
            "playlog.v1.ChannelService/ListChannels",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr


# -- item 4: one-line errors ------------------------------------------------------------------


def _one_line_refusal(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("playlog: ")
    return lines[0]


def test_a_port_in_use_is_one_line_naming_the_address(
    authed_server: tuple[Served, str], tmp_path: Path
) -> None:
    server, _ = authed_server
    line = _one_line_refusal(run("serve", "--data-dir", str(tmp_path / "other"), "--listen", server.address))
    assert line.startswith(f"playlog: listen {server.address}: cannot listen there")
    assert "Address already in use" in line


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_data_dir_that_cannot_be_one_is_one_line_naming_the_path(tmp_path: Path, where: str) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    data_dir = a_file if where == "file" else a_file / "sub"
    line = _one_line_refusal(
        run("serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{free_port()}")
    )
    assert line.startswith(f"playlog: data_dir {data_dir}: ")
    assert "not a directory" in line.lower()


def test_a_flag_given_to_the_wrong_subcommand_shows_that_subcommands_usage() -> None:
    result = run("verify", "--listen", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: playlog verify ")
    assert "playlog verify: error: unrecognized arguments: --listen 127.0.0.1:1" in result.stderr


def test_grpc_verbosity_defaults_to_error_and_an_explicit_one_is_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)
    cli.main(["token", "--name", "a", "--role", "reader"])
    assert os.environ["GRPC_VERBOSITY"] == "ERROR"
    monkeypatch.setenv("GRPC_VERBOSITY", "DEBUG")
    cli.main(["token", "--name", "a", "--role", "reader"])
    assert os.environ["GRPC_VERBOSITY"] == "DEBUG"


def test_stderr_stays_json_after_a_client_disconnects_abruptly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*PLAYLOG, "serve", "--data-dir", str(tmp_path / "data"), "--listen", address],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            ch_grpc.ChannelServiceStub(channel).DeclareChannel(
                ch.DeclareChannelRequest(channel_id="c", locked_window_ms=HOUR)
            )
        watcher = subprocess.Popen(
            [
                GRPCURL,
                "-plaintext",
                "-d",
                '{"channel_id":"c"}',
                address,
                "playlog.v1.ExecutionWindowService/WatchWindow",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert watcher.stdout is not None
        assert watcher.stdout.readline().startswith(b"{")  # the stream is open: a snapshot came
        watcher.kill()  # gone without a goodbye
        watcher.wait()
        assert run("health", "--server", address).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log.read_text().splitlines()
    assert lines, "the server logged nothing"
    for line in lines:
        json.loads(line)  # raises on a plain-text line
    assert json.loads(lines[-1])["event"] == "stopped"


# -- item 7: metrics --------------------------------------------------------------------------


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_channel_generation_and_build_info_through_the_metrics_listener(tmp_path: Path) -> None:
    import grpc as grpc_module

    import playlog

    data_dir, port, metrics_port = tmp_path / "data", free_port(), free_port()
    extra = ("--clock", "manual", "--start-utc-ms", str(T0), "--metrics-listen", f"127.0.0.1:{metrics_port}")
    server = Served(data_dir, port, *extra)
    try:
        samples = _scrape(metrics_port)
        python = ".".join(str(n) for n in sys.version_info[:3])
        labels = f'grpcio="{grpc_module.__version__}",python="{python}",version="{playlog.__version__}"'
        build = f"playlog_build_info{{{labels}}}"
        assert samples[build] == 1.0
        with grpc.insecure_channel(server.address) as channel:
            ch_grpc.ChannelServiceStub(channel).DeclareChannel(
                ch.DeclareChannelRequest(channel_id="news", locked_window_ms=HOUR)
            )
            assert _scrape(metrics_port)['playlog_channel_generation{channel_id="news"}'] == 0.0
            sd_grpc.ScheduleDayServiceStub(channel).StoreScheduleDay(
                sd.StoreScheduleDayRequest(schedule_day=schedule_day("news", date_of(T0 + DAY)))
            )
            window = ew_grpc.ExecutionWindowServiceStub(channel)
            for _ in range(2):
                assert window.PublishAtomicReplace(
                    ew.PublishAtomicReplaceRequest(
                        channel_id="news",
                        range_start_utc_ms=T0 + DAY,
                        range_end_utc_ms=T0 + 2 * DAY,
                        entries=day_of_entries(T0 + DAY),
                    )
                ).ok
        assert _scrape(metrics_port)['playlog_channel_generation{channel_id="news"}'] == 2.0
        assert server.stop() == 0
        # A restart knows the channel's generation before any publish.
        server = Served(data_dir, port, *extra)
        assert _scrape(metrics_port)['playlog_channel_generation{channel_id="news"}'] == 2.0
    finally:
        stop(server)


def test_every_metric_is_documented_in_the_readme_table() -> None:
    from prometheus_client import REGISTRY

    import playlog.metrics  # noqa: F401  (registers them)

    readme = (REPO / "README.md").read_text()
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("playlog_")}
    assert names, "no playlog metrics registered"
    for name in names:
        # prometheus_client names a counter without its _total suffix.
        shown = f"`{name}_total" if f"`{name}_total" in readme else f"`{name}"
        assert shown in readme, f"{name} is not in the README's metrics table"


# -- item 6: the wheel the container installs -------------------------------------------------


def test_the_wheel_serves_and_answers_health_from_a_fresh_venv(tmp_path: Path) -> None:
    """What the Dockerfile's runtime stage does, without Docker: build the
    wheel (generated code included), install only it into a fresh venv, serve,
    probe; the venv has no dev tools."""
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("playlog-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=300
    )
    for dev_tool in ("ruff", "mypy", "pytest", "grpcurl"):
        assert not (venv / "bin" / dev_tool).exists(), dev_tool
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [str(venv / "bin/playlog"), "serve", "--data-dir", str(tmp_path / "data"), "--listen", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        probed = subprocess.run(
            [str(venv / "bin/playlog"), "health", "--server", address],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (probed.returncode, probed.stdout.strip()) == (0, "SERVING"), probed.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

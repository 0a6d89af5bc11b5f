"""`playlog ctl` as an operator runs it: a subprocess against a served process
(manual clock at 2026-11-22T00:00Z), checking its output, its -o json and its
exit status (0 done, 1 refused, 2 usage or transport error)."""

from __future__ import annotations

import datetime
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from playlog import auth
from playlog.ctl.timefmt import BadValue, human_duration, iso_utc, parse_duration, parse_time
from tests import test_tls
from tests.builders import HOUR, MINUTE, T0
from tests.test_auth import Principal, write_auth_file
from tests.test_served_process import BIN, Served, free_port
from tests.test_tls import PRINCIPALS, Certs

tls_certs = test_tls.certs  # the module-scoped fixture, here named tls_certs

PLAYLOG = str(BIN / "playlog")
H2 = T0 + 2 * HOUR  # 02:00, where the published day begins


def iso(ms: int) -> str:
    return iso_utc(ms)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without any PLAYLOG_* setting and without the user's config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYLOG_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    env.update(extra)
    return env


class Ctl:
    def __init__(self, address: str, tmp_path: Path) -> None:
        self.address = address
        self.tmp_path = tmp_path

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PLAYLOG, "ctl", "--server", self.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=env or clean_env(self.tmp_path),
        )

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> dict[str, object]:
        return json.loads(self.ok(*args, "-o", "json"))  # type: ignore[no-any-return]

    def file(self, name: str, value: object) -> str:
        path = self.tmp_path / name
        path.write_text(json.dumps(value))
        return str(path)


def segment(title: str, duration: int, kind: str = "program") -> dict[str, object]:
    return {
        "segment_id": "s1",
        "segment_type": kind,
        "asset_uri": f"asset://{title}",
        "duration_ms": duration,
        "title": title,
    }


def news_entry(block_id: str, start: int, title: str) -> dict[str, object]:
    return {
        "block_id": block_id,
        "start_utc_ms": start,
        "end_utc_ms": start + 30 * MINUTE,
        "programming_day_date": "2026-11-22",
        "segments": [segment(title, 30 * MINUTE)],
    }


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[Ctl]:
    server = Served(tmp_path / "data", free_port(), "--clock", "manual", "--start-utc-ms", str(T0))
    yield Ctl(server.address, tmp_path)
    server.stop()


def news_day(ctl: Ctl) -> None:
    """The README's session: channel news with a 1h lock, its ScheduleDay, 02:00-04:00 published."""
    assert "channel news declared: lock 1h" in ctl.ok("declare", "news", "--lock", "1h")
    day = {
        "channel_id": "news",
        "programming_day_date": "2026-11-22",
        "plan_id": "weekday-plan-7",
        "slots": [{"start_utc_ms": H2, "end_utc_ms": H2 + 2 * HOUR, "program_id": "morning-news"}],
    }
    assert "stored ScheduleDay" in ctl.ok("store-day", "-f", ctl.file("day.json", day))
    titles = ["News at Two", "Weather", "Business", "Sport"]
    publish = {
        "channel_id": "news",
        "range_start_utc_ms": H2,
        "range_end_utc_ms": H2 + 2 * HOUR,
        "reason_code": "DAILY_PUBLISH",
        "entries": [news_entry(f"news-{i}", H2 + i * 30 * MINUTE, t) for i, t in enumerate(titles)],
    }
    assert ctl.ok("publish", "-f", ctl.file("publish.json", publish)).strip() == "published generation 1"


def rows(window_output: str, local: bool = False) -> dict[str, list[str]]:
    """The window table's rows by block id: [status, start, end, (local start, local end,)
    block, generation, ...]; the status "on air" as "on-air"."""
    out = {}
    for line in window_output.splitlines()[2:]:
        cells = line.replace("on air", "on-air").split()
        out[cells[5 if local else 3]] = cells
    return out


def test_window_shows_each_entrys_status_times_generation_and_override_mark(ctl: Ctl) -> None:
    news_day(ctl)
    table = ctl.ok("window", "news", "--from", iso(H2), "--to", "+4h")
    assert table.splitlines()[0].startswith(f"channel news  now {iso(T0)}  locked until {iso(T0 + HOUR)}")
    assert rows(table)["news-0"][:5] == ["flexible", iso(H2), iso(H2 + 30 * MINUTE), "news-0", "1"]
    ctl.ok("clock", "advance", "2h10m")  # 02:10: news-0 on air, lock to 03:10
    by_block = rows(ctl.ok("window", "news", "--from", "-10m", "--to", "+2h"))
    assert [by_block[f"news-{i}"][0] for i in range(4)] == ["on-air", "locked", "locked", "flexible"]
    ctl.ok("clock", "advance", "25m")  # 02:35
    by_block = rows(ctl.ok("window", "news", "--from", iso(H2), "--to", iso(H2 + 2 * HOUR), "--local"), True)
    assert by_block["news-0"][3] == datetime.datetime.fromtimestamp(H2 / 1000).astimezone().isoformat()
    assert [by_block[f"news-{i}"][0] for i in range(4)] == ["past", "on-air", "locked", "locked"]
    # The override mark: an overridden entry says so, with its record.
    entry = news_entry("news-3", H2 + 90 * MINUTE, "Breaking")
    del entry["block_id"]
    out = ctl.ok(
        "replace", "news", "news-3", "-f", ctl.file("e.json", entry), "--override", "--reason", "BREAKING"
    )
    record = out.split("override record ")[1].strip()
    override_row = rows(ctl.ok("window", "news", "--from", iso(H2 + 90 * MINUTE)))["news-3"]
    assert override_row[4:7] == ["2", "yes", record]


def test_window_reads_a_range_larger_than_one_message_in_pages(tmp_path: Path) -> None:
    server = Served(
        tmp_path / "data", free_port(), "--clock", "manual", "--start-utc-ms", str(T0),
        "--max-message-bytes", "16384",
    )  # fmt: skip
    try:
        ctl = Ctl(server.address, tmp_path)
        ctl.ok("declare", "news", "--lock", "1h")
        day = {"channel_id": "news", "programming_day_date": "2026-11-22", "plan_id": "p",
               "slots": [{"start_utc_ms": H2, "end_utc_ms": H2 + 12 * HOUR, "program_id": "x"}]}  # fmt: skip
        ctl.ok("store-day", "-f", ctl.file("day.json", day))
        for part in range(4):  # 4 publishes of 6 entries of about 1.2 KB: 24 entries, 29 KB
            start = H2 + part * 3 * HOUR
            entries = [news_entry(f"e{part}-{i}", start + i * 30 * MINUTE, "t" * 1200) for i in range(6)]
            publish = {"channel_id": "news", "range_start_utc_ms": start,
                       "range_end_utc_ms": start + 3 * HOUR, "reason_code": "DAILY_PUBLISH",
                       "entries": entries}  # fmt: skip
            ctl.ok("publish", "-f", ctl.file(f"p{part}.json", publish))
        snapshot = ctl.json("window", "news", "--from", iso(H2), "--to", iso(H2 + 12 * HOUR))
        entries = snapshot["entries"]
        assert isinstance(entries, list)
        assert [e["block_id"] for e in entries] == [f"e{p}-{i}" for p in range(4) for i in range(6)]
        assert snapshot["next_page_token"] == ""
    finally:
        server.stop()


def test_json_output_is_the_protobuf_json_with_default_values(ctl: Ctl) -> None:
    news_day(ctl)
    snapshot = ctl.json("window", "news", "--from", iso(H2), "--to", iso(H2 + HOUR))
    assert snapshot["now_utc_ms"] == str(T0) and snapshot["locked_until_utc_ms"] == str(T0 + HOUR)
    entries = snapshot["entries"]
    assert isinstance(entries, list) and [e["block_id"] for e in entries] == ["news-0", "news-1"]
    assert entries[0]["is_operator_override"] is False and entries[0]["override_record_id"] == ""
    assert ctl.json("channels")["channels"] == [
        {
            "channel_id": "news",
            "locked_window_ms": str(HOUR),
            "current_generation_id": "1",
            # Guide metadata (issue 16): defaults shown; the guide_id derived.
            "display_name": "",
            "guide_number": "",
            "icon_url": "",
            "stream_url": "",
            "guide_id": "news.playlog",
        }
    ]
    assert ctl.json("clock", "get") == {"now_utc_ms": str(T0), "manual": True}
    assert ctl.json("verify") == {"violations": []}


def test_a_publish_into_the_locked_window_is_refused_with_exit_1_and_the_code(ctl: Ctl) -> None:
    news_day(ctl)
    ctl.ok("clock", "advance", "90m")  # 01:30: the lock reaches 02:30
    publish = {
        "channel_id": "news",
        "range_start_utc_ms": H2,
        "range_end_utc_ms": H2 + 30 * MINUTE,
        "entries": [news_entry("flash", H2, "Flash")],
    }
    path = ctl.file("locked.json", publish)
    refused = ctl("publish", "-f", path)
    assert refused.returncode == 1
    assert refused.stderr.startswith("playlog ctl: refused: ERROR_CODE_LOCKED_WINDOW_VIOLATION: ")
    assert "locked window" in refused.stderr and refused.stdout == ""
    as_json = ctl("publish", "-f", path, "-o", "json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["ok"] is False
    assert rows(ctl.ok("window", "news", "--from", iso(H2)))["news-0"][4] == "1"  # nothing changed
    # The same publish as an override goes through.
    assert "override record" in ctl.ok("publish", "-f", path, "--override", "--reason", "BREAKING_NEWS")
    assert rows(ctl.ok("window", "news", "--from", iso(H2)))["flash"][4:6] == ["2", "yes"]


def test_a_replace_refused_in_the_lock_then_done_as_an_override(ctl: Ctl) -> None:
    news_day(ctl)
    ctl.ok("clock", "advance", "90m")
    entry = news_entry("news-0", H2, "Breaking News")
    path = ctl.file("entry.json", entry)
    refused = ctl("replace", "news", "news-0", "-f", path, "--reason", "BREAKING_NEWS")
    assert refused.returncode == 1 and "ERROR_CODE_LOCKED_WINDOW_VIOLATION" in refused.stderr
    result = json.loads(
        ctl.ok(
            "replace", "news", "news-0", "-f", path, "--override", "--reason", "BREAKING_NEWS", "-o", "json"
        )
    )
    assert result["ok"] is True and result["published_generation_id"] == "2" and result["override_record_id"]


def test_cut_ends_the_entry_on_air_at_the_cut_and_airs_the_new_entries(ctl: Ctl) -> None:
    news_day(ctl)
    ctl.ok("clock", "set", iso(H2 + 10 * MINUTE))  # 02:10: news-0 [02:00, 02:30) on air
    flash = [
        {
            "block_id": "flash-0215",
            "start_utc_ms": H2 + 15 * MINUTE,
            "end_utc_ms": H2 + 30 * MINUTE,
            "programming_day_date": "2026-11-22",
            "segments": [segment("Newsflash", 15 * MINUTE, "live")],
        }
    ]
    path = ctl.file("flash.json", flash)
    # A dry run says what the cut would do and writes nothing.
    dry = ctl.ok("cut", "news", "--at", "+5m", "-f", path, "--reason", "BREAKING_NEWS", "--dry-run")
    assert dry.startswith("dry run: nothing written; it would publish generation 2")
    # As a diff of the window: the entry on air cut (~), the new entry added (+).
    diff = [line.split()[:6] for line in dry.splitlines()[2:]]
    assert diff == [
        ["~", "news-0", "1->2", iso(H2), iso(H2 + 30 * MINUTE), "->"],
        ["+", "flash-0215", "2", iso(H2 + 15 * MINUTE), iso(H2 + 30 * MINUTE), "Newsflash"],
    ], dry
    assert f"-> {iso(H2 + 15 * MINUTE)} (cut)" in dry.splitlines()[2]
    assert rows(ctl.ok("window", "news", "--from", iso(H2), "--to", iso(H2 + HOUR)))["news-0"][2] == iso(
        H2 + 30 * MINUTE
    )
    out = ctl.ok("cut", "news", "--at", "+5m", "-f", path, "--reason", "BREAKING_NEWS")
    assert out.startswith("published generation 2, override record ")
    by_block = rows(ctl.ok("window", "news", "--from", iso(H2), "--to", iso(H2 + HOUR)))
    assert by_block["news-0"][:3] == ["on-air", iso(H2), iso(H2 + 15 * MINUTE)]
    assert by_block["flash-0215"][:3] == ["locked", iso(H2 + 15 * MINUTE), iso(H2 + 30 * MINUTE)]
    assert by_block["news-1"][1] == iso(H2 + 30 * MINUTE)
    # A cut needs its reason; without it the usage is wrong (exit 2) and nothing is sent.
    assert ctl("cut", "news", "--at", "+6m", "-f", str(ctl.tmp_path / "flash.json")).returncode == 2


def test_now_shows_on_air_next_time_to_lock_and_runway(ctl: Ctl) -> None:
    news_day(ctl)
    ctl.ok("clock", "set", iso(H2 + 10 * MINUTE))  # 02:10, lock to 03:10
    lines = dict(line.split(":", 1) for line in ctl.ok("now", "news").splitlines())
    assert lines["on air"].strip().startswith(f"news-0 [{iso(H2)}, {iso(H2 + 30 * MINUTE)})")
    assert lines["next"].strip().startswith("news-1 ")
    assert lines["left on air"].strip() == "20m"
    assert lines["time to lock"].strip() == "20m (news-3 locks next)"  # news-3 at 03:30, lock end 03:10
    assert lines["runway"].strip().startswith("1h50m (published until")  # until 04:00
    view = json.loads(ctl.ok("now", "news", "-o", "json"))
    assert view["on_air"]["block_id"] == "news-0" and view["runway_ms"] == str(110 * MINUTE)


def test_records_page_through_every_override_record(ctl: Ctl) -> None:
    news_day(ctl)
    ctl.ok("clock", "advance", "90m")
    for i, title in enumerate(["A", "B", "C"]):
        entry = news_entry("news-0", H2, title)
        ctl.ok(
            "replace",
            "news",
            "news-0",
            "-f",
            ctl.file(f"e{i}.json", entry),
            "--override",
            "--reason",
            f"R{i}",
        )
    records = ctl.json("records", "news", "--page-size", "1")
    assert isinstance(records["records"], list)
    assert [r["reason_code"] for r in records["records"]] == ["R0", "R1", "R2"]
    assert records["next_page_token"] == ""
    table = ctl.ok("records", "--page-size", "2")
    assert len(table.splitlines()) == 4 and "news-0@1" in table and "news-0@3" in table


def test_days_and_their_history(ctl: Ctl) -> None:
    news_day(ctl)
    day = ctl.ok("days", "news", "2026-11-22")
    assert "weekday-plan-7" in day and "morning-news" in day and iso(H2) in day
    history = ctl.json("days", "news", "2026-11-22", "--history")
    versions = history["schedule_days"]
    assert isinstance(versions, list) and len(versions) == 1 and versions[0]["is_authoritative"] is True
    missing = ctl("days", "news", "2026-11-23")
    assert missing.returncode == 1 and missing.stderr.startswith("playlog ctl: NOT_FOUND: ")


def test_watch_prints_one_line_per_event_and_ctrl_c_ends_it_with_exit_0(ctl: Ctl) -> None:
    news_day(ctl)
    watch = subprocess.Popen(
        [PLAYLOG, "ctl", "--server", ctl.address, "watch", "news"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(ctl.tmp_path),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert watch.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        snapshot = lines.get(timeout=20)
        assert "snapshot    generation 1, 4 entries" in snapshot and "complete" in snapshot
        entry = news_entry("news-3", H2 + 90 * MINUTE, "Late")
        ctl.ok("replace", "news", "news-3", "-f", ctl.file("late.json", entry), "--reason", "LATE_CHANGE")
        replaced = lines.get(timeout=20)
        assert "replaced    generation 2 (after 1)" in replaced
        assert "reason LATE_CHANGE" in replaced and replaced.rstrip().endswith(": news-3")
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=20) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


def test_clock_and_relative_times(ctl: Ctl) -> None:
    assert ctl.ok("clock", "get").strip() == f"now {iso(T0)} (manual clock)"
    assert ctl.ok("clock", "advance", "90s").strip() == f"now {iso(T0 + 90_000)}"
    assert ctl.ok("clock", "set", "+1h").strip() == f"now {iso(T0 + 90_000 + HOUR)}"
    assert ctl.ok("clock", "set", str(T0 + 2 * HOUR)).strip() == f"now {iso(T0 + 2 * HOUR)}"
    back = ctl("clock", "set", iso(T0))  # time never moves backwards: the server refuses
    assert back.returncode == 1 and back.stderr.startswith("playlog ctl: INVALID_ARGUMENT: ")
    assert ctl.ok("verify").strip() == "no violations"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    ctl = Ctl(f"127.0.0.1:{free_port()}", tmp_path)
    for args in (
        ("declare", "news", "--lock", "an hour"),
        ("declare", "news"),
        ("window", "news", "--from", "yesterday"),
        ("publish", "-f", str(tmp_path / "missing.json")),
        ("clock", "spin"),
        ("nonsense",),
        ("channels", "--context", "nowhere"),
    ):
        result = ctl(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip(), args


def test_nothing_listening_is_a_transport_error_exit_2(tmp_path: Path) -> None:
    result = Ctl(f"127.0.0.1:{free_port()}", tmp_path)("channels", "--timeout", "3")
    assert result.returncode == 2 and result.stderr.startswith("playlog ctl: UNAVAILABLE: ")


def test_an_undeclared_channel_is_refused_with_exit_1(ctl: Ctl) -> None:
    result = ctl("window", "nope")
    assert result.returncode == 1 and result.stderr.startswith("playlog ctl: NOT_FOUND: ")


def test_flags_beat_environment_beat_the_context(ctl: Ctl, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    config = tmp_path / "ctl.toml"
    config.write_text(
        f'current = "studio"\n[contexts.studio]\nserver = "{ctl.address}"\n'
        f'[contexts.dead]\nserver = "{dead}"\n'
    )

    def run(*args: str, **env: str) -> int:
        cmd = [PLAYLOG, "ctl", *args, "channels", "--timeout", "3"]
        e = clean_env(tmp_path, PLAYLOG_CTL_CONFIG=str(config), **env)
        return subprocess.run(cmd, capture_output=True, timeout=30, check=False, env=e).returncode

    assert run() == 0  # the current context
    assert run("--context", "dead") == 2
    assert run(PLAYLOG_SERVER=dead) == 2  # environment beats the context
    assert run("--server", ctl.address, PLAYLOG_SERVER=dead) == 0  # the flag beats the environment


def test_times_and_durations_parse_as_documented() -> None:
    assert parse_duration("30m") == 30 * MINUTE and parse_duration("1h30m") == 90 * MINUTE
    assert parse_duration("90s") == 90_000 and parse_duration("2d") == 48 * HOUR
    assert parse_time("2026-11-22T02:30:00Z", None) == T0 + 150 * MINUTE
    assert parse_time("2026-11-22T03:30:00+01:00", None) == T0 + 150 * MINUTE
    assert parse_time(str(T0), None) == T0
    assert parse_time("now", T0) == T0 and parse_time("+30m", T0) == T0 + 30 * MINUTE
    assert parse_time("-2h", T0) == T0 - 2 * HOUR and parse_time("now+1d", T0) == T0 + 24 * HOUR
    for bad in ("", "1x", "30", "m30"):
        with pytest.raises(BadValue):
            parse_duration(bad)
    with pytest.raises(BadValue):
        parse_time("tomorrow", T0)
    assert human_duration(90 * MINUTE) == "1h30m" and human_duration(-5 * MINUTE) == "-5m"


def test_bash_completion_script_names_every_command(tmp_path: Path) -> None:
    script = Ctl("unused", tmp_path).ok("completion", "bash")
    assert "complete -F _playlog_ctl playlog" in script
    for command in (
        "channels",
        "declare",
        "window",
        "now",
        "publish",
        "replace",
        "cut",
        "records",
        "days",
        "watch",
        "verify",
        "clock",
    ):
        assert f"        {command}) words=" in script


def _complete(script: str, words: list[str], cwd: Path) -> list[str]:
    """What the completion offers for `words` (the last one being typed), run in bash."""
    quoted = " ".join(f"'{w}'" for w in words)
    program = f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; _playlog_ctl; "
    program += 'printf "%s\\n" "${COMPREPLY[@]}"'
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, cwd=cwd, check=True)
    return done.stdout.split()


def test_bash_completion_offers_formats_after_o_and_file_names_where_o_is_a_file(tmp_path: Path) -> None:
    script = Ctl("unused", tmp_path).ok("completion", "bash")
    (tmp_path / "as-run.xml").write_text("")
    assert _complete(script, ["playlog", "ctl", "window", "-o", ""], tmp_path) == ["table", "json"]
    offered = _complete(script, ["playlog", "ctl", "bxf", "export-as-run", "-o", "as"], tmp_path)
    assert offered == ["as-run.xml"]


def test_the_token_is_sent_as_bearer_and_the_servers_refusals_exit_1(tmp_path: Path) -> None:
    reader, operator = auth.new_token(), auth.new_token()
    auth_file = write_auth_file(
        tmp_path / "auth.toml",
        [Principal("reader-1", ["reader"], token=reader), Principal("desk", ["operator"], token=operator)],
    )
    server = Served(tmp_path / "data", free_port(), "--auth-file", str(auth_file))
    try:
        ctl = Ctl(server.address, tmp_path)
        anonymous = ctl("channels")
        assert anonymous.returncode == 1 and anonymous.stderr.startswith("playlog ctl: UNAUTHENTICATED: ")
        assert ctl.ok("channels", "--token", reader).startswith("CHANNEL")
        denied = ctl("declare", "news", "--lock", "1h", env=clean_env(tmp_path, PLAYLOG_TOKEN=reader))
        assert denied.returncode == 1 and denied.stderr.startswith("playlog ctl: PERMISSION_DENIED: ")
        config = tmp_path / "ctl.toml"
        config.write_text(f'[contexts.desk]\nserver = "{server.address}"\ntoken = "{operator}"\n')
        env = clean_env(tmp_path, PLAYLOG_CTL_CONFIG=str(config))
        declared = subprocess.run(
            [PLAYLOG, "ctl", "--context", "desk", "declare", "news", "--lock", "1h"],
            capture_output=True, text=True, timeout=30, check=False, env=env,
        )  # fmt: skip
        assert declared.returncode == 0, declared.stderr
    finally:
        server.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls_from_flags_and_environment(tmp_path: Path, tls_certs: Certs) -> None:
    certs = tls_certs
    address = f"127.0.0.1:{free_port()}"
    auth_file = write_auth_file(tmp_path / "auth.toml", PRINCIPALS.values())
    log = (tmp_path / "server.log").open("ab")
    proc = subprocess.Popen(
        [PLAYLOG, "serve", "--data-dir", str(tmp_path / "data"), "--listen", address,
         "--auth-file", str(auth_file), "--tls-cert", str(certs.server_cert), "--tls-key",
         str(certs.server_key), "--tls-client-ca", str(certs.ca)],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    try:
        ctl = Ctl(address, tmp_path)
        scheduler = ["--ca-cert", str(certs.ca), "--client-cert", str(certs.clients["scheduler"][0]),
                     "--client-key", str(certs.clients["scheduler"][1])]  # fmt: skip
        deadline = time.monotonic() + 30
        while (listed := ctl("channels", *scheduler, "--timeout", "1")).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, listed.stderr
        assert listed.stdout.startswith("CHANNEL")
        denied = ctl("declare", "news", "--lock", "1h", *scheduler)
        assert denied.returncode == 1 and denied.stderr.startswith("playlog ctl: PERMISSION_DENIED: ")
        cert, key = certs.clients["operator"]
        env = clean_env(
            tmp_path,
            PLAYLOG_CA_CERT=str(certs.ca),
            PLAYLOG_CLIENT_CERT=str(cert),
            PLAYLOG_CLIENT_KEY=str(key),
        )
        declared = ctl("declare", "news", "--lock", "1h", env=env)
        assert declared.returncode == 0, declared.stderr
        # Without a client certificate the handshake fails: a transport error.
        no_cert = ctl("channels", "--ca-cert", str(certs.ca), "--timeout", "3")
        assert no_cert.returncode == 2 and no_cert.stderr.startswith("playlog ctl: UNAVAILABLE: ")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

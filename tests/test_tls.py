"""TLS and mutual TLS (issue 5), with certificates the tests make with the
openssl command line: the server's certificate, a client that trusts (or does
not trust) its CA, and client certificates whose subject is a principal."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from playlog import auth
from playlog.clock import ManualClock
from playlog.config import ConfigError, Settings
from playlog.server import PlaylogServer, describe_startup
from playlog.v1 import channel_service_pb2 as ch
from playlog.v1 import schedule_day_service_pb2 as sd
from tests.builders import HOUR, T0, date_of, schedule_day
from tests.conftest import Running, Stubs, make_stubs, start_server
from tests.test_auth import Principal, bearer, details, write_auth_file

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

# The subjects as `openssl x509 -noout -subject -nameopt RFC2253` prints them,
# which is what gRPC reports as x509_subject and what cert_subject holds.
SCHEDULER_SUBJECT = "CN=scheduler-1,OU=Scheduling,O=Playlog Test,C=US"
OPERATOR_SUBJECT = "CN=operator-1,O=Playlog\\, Inc.,C=US"  # a comma in a value is escaped
STRANGER_SUBJECT = "CN=stranger,O=Playlog Test"
DESK_SUBJECT = "O=Example Broadcast,CN=mcr-desk"  # made with -subj "/CN=mcr-desk/O=Example Broadcast"


@dataclasses.dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    other_ca: Path
    clients: dict[str, tuple[Path, Path]]  # name -> (cert, key)

    def client(self, name: str) -> tuple[bytes, bytes]:
        cert, key = self.clients[name]
        return cert.read_bytes(), key.read_bytes()


def _openssl(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        ["openssl", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _key_and_csr(d: Path, name: str, subj: str) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj, cwd=d,
    )  # fmt: skip


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        cwd=d,
    )  # fmt: skip


def _sign(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d,
    )  # fmt: skip


def make_certs(d: Path) -> Certs:
    """A CA, a server certificate for localhost signed by it, client
    certificates signed by it, and an impostor signed by another CA."""
    _ca(d, "ca")
    _ca(d, "other-ca")
    _key_and_csr(d, "server", "/CN=localhost")
    _sign(d, "server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    clients = {
        "scheduler": "/C=US/O=Playlog Test/OU=Scheduling/CN=scheduler-1",
        "operator": "/C=US/O=Playlog, Inc./CN=operator-1",
        "stranger": "/O=Playlog Test/CN=stranger",
        # The README's example: written CN first, its RFC 2253 subject is O first.
        "desk": "/CN=mcr-desk/O=Example Broadcast",
    }
    for name, subj in clients.items():
        _key_and_csr(d, name, subj)
        _sign(d, name, "ca", "extendedKeyUsage=clientAuth\n")
    # A client certificate from a CA the server does not trust.
    _key_and_csr(d, "impostor", "/C=US/O=Playlog Test/OU=Scheduling/CN=scheduler-1")
    _sign(d, "impostor", "other-ca", "extendedKeyUsage=clientAuth\n")
    return Certs(
        ca=d / "ca.pem",
        server_cert=d / "server.pem",
        server_key=d / "server.key",
        other_ca=d / "other-ca.pem",
        clients={name: (d / f"{name}.pem", d / f"{name}.key") for name in [*clients, "impostor"]},
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def test_the_subjects_are_what_openssl_prints_in_rfc2253_form(certs: Certs) -> None:
    for name, expected in [
        ("scheduler", SCHEDULER_SUBJECT),
        ("operator", OPERATOR_SUBJECT),
        ("desk", DESK_SUBJECT),
    ]:
        out = _openssl(
            "x509",
            "-in",
            certs.clients[name][0],
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
            cwd=certs.ca.parent,
        )
        assert out.strip() == f"subject={expected}"


PRINCIPALS = {
    "reader-1": Principal("reader-1", ["reader"], token=auth.new_token()),
    "scheduler-1": Principal("scheduler-1", ["scheduler"], cert_subject=SCHEDULER_SUBJECT),
    # Written with spaces around the separators: still the same subject.
    "operator-1": Principal(
        "operator-1",
        ["operator"],
        token=auth.new_token(),
        cert_subject="CN = operator-1, O=Playlog\\, Inc., C=US",
    ),
    "mcr-desk": Principal("mcr-desk", ["operator"], cert_subject=DESK_SUBJECT),
}


def secure_stubs(
    r: Running, certs: Certs, *, ca: Path | None = None, client: str | None = None
) -> tuple[grpc.aio.Channel, Stubs]:
    key = cert = None
    if client is not None:
        cert, key = certs.client(client)
    creds = grpc.ssl_channel_credentials(
        root_certificates=(ca or certs.ca).read_bytes(), private_key=key, certificate_chain=cert
    )
    channel = grpc.aio.secure_channel(f"localhost:{r.server.port}", creds)
    return channel, make_stubs(channel)


async def _start(
    tmp_path: Path, certs: Certs, *, mutual: bool, principals: dict[str, Principal] = PRINCIPALS
) -> Running:
    path = write_auth_file(tmp_path / "auth.toml", principals.values())
    return await start_server(
        tmp_path / "data",
        ManualClock(T0),
        auth_file=str(path),
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca) if mutual else "",
    )


@pytest.fixture
async def tls(tmp_path: Path, certs: Certs) -> AsyncIterator[Running]:
    r = await _start(tmp_path, certs, mutual=False)
    yield r
    await r.server.stop(0)


@pytest.fixture
async def mtls(tmp_path: Path, certs: Certs) -> AsyncIterator[Running]:
    r = await _start(tmp_path, certs, mutual=True)
    yield r
    await r.server.stop(0)


LIST = ch.ListChannelsRequest()
TIMEOUT = 5


async def test_tls_with_a_token(tls: Running, certs: Certs) -> None:
    channel, stubs = secure_stubs(tls, certs)
    try:
        await stubs.channel.ListChannels(LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(LIST, timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


async def test_tls_is_not_spoken_in_plain_text(tls: Running) -> None:
    """The conftest stubs use a plain-text channel: the TLS port does not answer them."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await tls.stubs.channel.ListChannels(
            LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_client_that_does_not_trust_the_servers_ca_does_not_connect(
    tls: Running, certs: Certs
) -> None:
    channel, stubs = secure_stubs(tls, certs, ca=certs.other_ca)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(
                LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_mutual_tls_maps_the_certificate_subject_to_a_principal(mtls: Running, certs: Certs) -> None:
    channel, stubs = secure_stubs(mtls, certs, client="scheduler")
    try:
        await stubs.channel.ListChannels(LIST, timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.DeclareChannel(
                ch.DeclareChannelRequest(channel_id="ch1", locked_window_ms=HOUR), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'scheduler-1' (roles: scheduler)" in details(refused.value)
    finally:
        await channel.close()
    # The operator's certificate (escaped comma in its subject) may declare; the
    # scheduler's may then store a day, and the record says who did it.
    channel, op = secure_stubs(mtls, certs, client="operator")
    try:
        declared = await op.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id="ch1", locked_window_ms=HOUR), timeout=TIMEOUT
        )
        assert declared.changed
    finally:
        await channel.close()
    channel, stubs = secure_stubs(mtls, certs, client="scheduler")
    try:
        stored = await stubs.days.StoreScheduleDay(
            sd.StoreScheduleDayRequest(schedule_day=schedule_day("ch1", date_of(T0 + 2 * HOUR))),
            timeout=TIMEOUT,
        )
        assert stored.ok, stored
    finally:
        await channel.close()


async def test_mutual_tls_without_a_client_certificate_is_refused(mtls: Running, certs: Certs) -> None:
    """The handshake fails: the call never reaches the service, even with a good token."""
    assert describe_startup(mtls.server)["client_certificates"] == "required"
    channel, stubs = secure_stubs(mtls, certs, client=None)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(
                LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_mutual_tls_with_tokens_and_certificates_each_client_is_its_own_principal(
    mtls: Running, certs: Certs
) -> None:
    """The README's mixed example on one server: a token holder (with a
    certificate of the CA, whatever its subject) and a certificate-only desk."""
    info = describe_startup(mtls.server)
    assert info["client_certificates"] == "required"
    assert info["token_only_principals_need_a_client_certificate"] == ["reader-1"]
    declare = ch.DeclareChannelRequest(channel_id="ch1", locked_window_ms=HOUR)
    token_channel, token_holder = secure_stubs(mtls, certs, client="stranger")
    desk_channel, desk = secure_stubs(mtls, certs, client="desk")
    try:
        reader = bearer(PRINCIPALS["reader-1"].token)
        await token_holder.channel.ListChannels(LIST, metadata=reader, timeout=TIMEOUT)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await token_holder.channel.DeclareChannel(declare, metadata=reader, timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'reader-1' (roles: reader)" in details(refused.value)
        # The desk's certificate (subject O=Example Broadcast,CN=mcr-desk) is an operator.
        declared = await desk.channel.DeclareChannel(declare, timeout=TIMEOUT)
        assert declared.changed
        listed = await desk.channel.ListChannels(LIST, timeout=TIMEOUT)
        assert [c.channel_id for c in listed.channels] == ["ch1"]
    finally:
        await token_channel.close()
        await desk_channel.close()


async def test_mutual_tls_refuses_a_certificate_from_another_ca(mtls: Running, certs: Certs) -> None:
    """The handshake fails, even with a good token."""
    channel, stubs = secure_stubs(mtls, certs, client="impostor")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(
                LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()


async def test_mutual_tls_with_an_unknown_subject_is_unauthenticated(mtls: Running, certs: Certs) -> None:
    channel, stubs = secure_stubs(mtls, certs, client="stranger")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(LIST, timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert STRANGER_SUBJECT in details(refused.value)
        # A known certificate with a token: the token decides.
        await stubs.channel.ListChannels(LIST, metadata=bearer(PRINCIPALS["reader-1"].token), timeout=TIMEOUT)
    finally:
        await channel.close()


async def test_with_a_certificate_and_a_token_the_token_decides(mtls: Running, certs: Certs) -> None:
    channel, stubs = secure_stubs(mtls, certs, client="scheduler")
    try:
        declared = await stubs.channel.DeclareChannel(
            ch.DeclareChannelRequest(channel_id="ch1", locked_window_ms=HOUR),
            metadata=bearer(PRINCIPALS["operator-1"].token),
            timeout=TIMEOUT,
        )
        assert declared.changed
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs.channel.ListChannels(LIST, metadata=bearer(auth.new_token()), timeout=TIMEOUT)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()


def test_mutual_tls_needs_an_auth_file(tmp_path: Path, certs: Certs) -> None:
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        tls_client_ca=str(certs.ca),
    )
    with pytest.raises(ConfigError, match="needs auth_file"):
        PlaylogServer(settings)


async def test_a_missing_certificate_file_is_a_configuration_error(tmp_path: Path, certs: Certs) -> None:
    server = PlaylogServer(
        Settings(
            data_dir=str(tmp_path / "data"),
            listen="127.0.0.1:0",
            tls_cert=str(tmp_path / "nope.pem"),
            tls_key=str(certs.server_key),
        )
    )
    try:
        with pytest.raises(ConfigError, match="tls_cert"):
            await server.start()
    finally:
        server.store.close()
        server.executor.shutdown()


def test_subjects_compare_without_spaces_and_attribute_case() -> None:
    assert auth.normalize_subject("cn = a , O=B\\, Inc. ,C=US") == "CN=a,O=B\\, Inc.,C=US"
    assert auth.normalize_subject("CN=a+UID=7,O=B") == "CN=a+UID=7,O=B"
    assert auth.normalize_subject("CN=a,O=b") != auth.normalize_subject("O=b,CN=a")


async def test_the_server_sees_the_subject_in_rfc_2253_order(tmp_path: Path, certs: Certs) -> None:
    """A certificate made with -subj "/CN=mcr-desk/O=Example Broadcast" is, to
    the server (gRPC's x509_subject), O=Example Broadcast,CN=mcr-desk: the
    refusal of an unknown certificate names the subject it saw."""
    principals = {"scheduler-1": PRINCIPALS["scheduler-1"]}
    r = await _start(tmp_path, certs, mutual=True, principals=principals)
    try:
        channel, stubs = secure_stubs(r, certs, client="desk")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.channel.ListChannels(LIST, timeout=TIMEOUT)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert DESK_SUBJECT in details(refused.value)
            assert "CN=mcr-desk,O=Example Broadcast" not in details(refused.value)
        finally:
            await channel.close()
    finally:
        await r.server.stop(0)


async def test_grpc_python_cannot_request_a_client_certificate_without_requiring_it(certs: Certs) -> None:
    """Why there is no "certificate optional" mode (server.client_certificate_mode):
    with require_client_auth=False the server does not ask for a certificate,
    so a client's is never seen. If this fails, gRPC gained the mode: revisit."""

    async def peer_identity(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return b",".join(sorted(k.encode() for k in context.auth_context()))

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "t.T", {"M": grpc.unary_unary_rpc_method_handler(peer_identity)}
            ),
        )
    )
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials(
            [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
            root_certificates=certs.ca.read_bytes(),
            require_client_auth=False,
        ),
    )
    await server.start()
    try:
        cert, key = certs.client("desk")
        creds = grpc.ssl_channel_credentials(certs.ca.read_bytes(), private_key=key, certificate_chain=cert)
        async with grpc.aio.secure_channel(f"localhost:{port}", creds) as channel:
            seen = await channel.unary_unary("/t.T/M")(b"", timeout=TIMEOUT)
        assert b"transport_security_type" in seen
        assert b"x509_subject" not in seen
    finally:
        await server.stop(0)

"""TLS listeners: the gateway's certificate, client certificates required, and checked per bank."""
import datetime as dt
import ipaddress

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import endpoints, reactor, ssl, task
from twisted.internet.protocol import Factory

from config.key_files import write_key_file
from config.settings import Settings
from gateway.sim.client import CounterClient
from gateway_harness import Bank, code_of, settings_tree, set_zmk_env, start_gateway, stop_all
from test_gateway_codes import CUSTOMER
from test_gateway_counter import STANDARD, seed


def issue(subject: str, issuer=None, issuer_key=None, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1)))
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return key, cert


def pem(key, cert) -> tuple[bytes, bytes]:
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
def pki(tmp_path):
    ca_key, ca = issue("gridpay test CA")
    files = {}
    for name, subject, server in (("server", "localhost", True), ("bank", "bank-01020000", False),
                                  ("intruder", "intruder", False)):
        key, cert = issue(subject, ca.subject, ca_key, server)
        key_pem, cert_pem = pem(key, cert)
        write_key_file(tmp_path / f"{name}.key", key_pem)
        (tmp_path / f"{name}.crt").write_bytes(cert_pem)
        files[name] = ssl.PrivateCertificate.loadPEM(key_pem + cert_pem)
    (tmp_path / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["ca"] = ssl.Certificate.loadPEM(ca.public_bytes(serialization.Encoding.PEM))
    files["dir"] = tmp_path
    return files


def tls_settings(url, pki) -> Settings:
    set_zmk_env()
    tree = settings_tree(url, **{"01020000": {"client_cert_subject": "bank-01020000"}})
    d = pki["dir"]
    tree["gateway"]["listeners"][0].update(tls_cert_file=str(d / "server.crt"), tls_key_file=str(d / "server.key"),
                                           tls_client_ca_file=str(d / "ca.crt"))
    return Settings.model_validate(tree)


async def tls_bank(gw, pki, who: str | None) -> Bank:
    options = ssl.optionsForClientTLS("localhost", trustRoot=pki["ca"],
                                      clientCertificate=pki[who] if who else None)
    endpoint = endpoints.SSL4ClientEndpoint(reactor, "127.0.0.1", gw.port_of("ascii"), options)
    bank = Bank(reactor, gw, "01020000")
    bank.client = await endpoint.connect(Factory.forProtocol(lambda: CounterClient(bank.dialect)))
    return bank


@pytest_twisted.ensureDeferred
async def test_bank_with_its_certificate_is_served(sqlite_url, pki):
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url, settings=tls_settings(sqlite_url, pki))
    bank = await tls_bank(gw, pki, "bank")
    try:
        await bank.sign_on()
        assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_another_certificate_cannot_speak_for_the_bank(sqlite_url, pki):
    """CA-signed, but not the subject bank 01020000 names: 58 for that bank (01030000 names none)."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url, settings=tls_settings(sqlite_url, pki))
    bank = await tls_bank(gw, pki, "intruder")
    try:
        answer = await bank.send("0800", {**bank.head(), "70": "001"}, key=False)
        assert code_of(answer) == "58"
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_missing_client_certificate_is_refused(sqlite_url, pki):
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url, settings=tls_settings(sqlite_url, pki))
    try:
        with pytest.raises(Exception):
            bank = await tls_bank(gw, pki, None)
            await bank.send("0800", {**bank.head(), "70": "001"}, key=False)
    finally:
        await stop_all(gw)


def test_banks_a_certificate_may_speak_for():
    from gateway.tls import banks_certified

    subjects = {"A": "bank-a", "B": "", "C": "bank-c"}.get
    assert banks_certified({"A", "B", "C"}, "bank-a", subjects) == {"A", "B"}
    assert banks_certified({"A", "C"}, "stranger", subjects) == frozenset()
    assert banks_certified({"A", "C"}, None, subjects) == frozenset()


def one_bank_tls_settings(url, pki, **listener) -> Settings:
    """The ascii listener, TLS, for 01020000 alone (so a connection is that bank's from its address on)."""
    set_zmk_env()
    tree = settings_tree(url, **{"01020000": {"client_cert_subject": "bank-01020000", "max_connections": 2}})
    d = pki["dir"]
    tree["gateway"]["listeners"][0].update(banks=["01020000"], tls_cert_file=str(d / "server.crt"),
                                           tls_key_file=str(d / "server.key"), tls_client_ca_file=str(d / "ca.crt"),
                                           **listener)
    return Settings.model_validate(tree)


async def plain_tcp(gw) -> CounterClient:
    """A connection to the TLS port that never starts a handshake."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", gw.port_of("ascii"))
    return await endpoint.connect(Factory.forProtocol(lambda: CounterClient(Bank(reactor, gw).dialect)))


@pytest_twisted.ensureDeferred
async def test_connections_without_a_handshake_take_no_slot_of_the_bank(sqlite_url, pki):
    """Plain TCP connections to a TLS listener (limit 2) do not count against its bank until their
    handshake and certificate check: the bank with its certificate is still served."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url, settings=one_bank_tls_settings(sqlite_url, pki))
    squatters = [await plain_tcp(gw) for _ in range(3)]
    banks = []
    try:
        await task.deferLater(reactor, 0.1)
        assert gw.metrics.registry.get_sample_value("gridpay_connections", {"bank": "01020000"}) == 0
        banks = [await tls_bank(gw, pki, "bank") for _ in range(2)]
        for bank in banks:
            await bank.sign_on()
            assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
        assert gw.metrics.registry.get_sample_value("gridpay_connections", {"bank": "01020000"}) == 2
    finally:
        for client in squatters:
            client.transport.loseConnection()
        await stop_all(gw, *banks)


@pytest_twisted.ensureDeferred
async def test_a_handshake_not_finished_in_time_is_closed(sqlite_url, pki):
    """tls_handshake_timeout_s (default 10 s) bounds the handshake; a finished one is not affected."""
    seed(sqlite_url, STANDARD)
    clock = task.Clock()
    gw = await start_gateway(reactor, sqlite_url, clock=clock, settings=one_bank_tls_settings(sqlite_url, pki))
    squatter = await plain_tcp(gw)
    bank = await tls_bank(gw, pki, "bank")
    try:
        await bank.sign_on()
        clock.advance(9.9)
        await task.deferLater(reactor, 0.1)
        assert not squatter.closed.called
        clock.advance(0.2)
        await task.deferLater(reactor, 0.1)
        assert squatter.closed.called and not bank.client.closed.called
        assert gw.metrics.connections_refused.labels("01020000", "handshake")._value.get() == 1
        assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
    finally:
        squatter.transport.loseConnection()
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_a_certificate_for_no_bank_of_the_listener_is_refused_at_the_handshake(sqlite_url, pki):
    """On the one-bank listener the intruder's CA-signed certificate fits no bank: closed after the
    handshake, before any request, and never counted against 01020000."""
    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url, settings=one_bank_tls_settings(sqlite_url, pki))
    try:
        intruder = await tls_bank(gw, pki, "intruder")
        await intruder.client.closed.addTimeout(10, reactor)  # a hang guard, not a timing
        assert gw.metrics.connections_refused.labels("01020000", "certificate")._value.get() == 1
        assert gw.metrics.registry.get_sample_value("gridpay_connections", {"bank": "01020000"}) == 0
    finally:
        await stop_all(gw)

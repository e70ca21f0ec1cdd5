"""Faults at the counter channel: timers, floods, foreign networks, concurrency, the database going away."""
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.protocols.portforward import ProxyFactory

from config.settings import Settings
from gateway_harness import Bank, code_of, connected_bank, make_settings, settings_tree, start_gateway, stop_all
from iso8583_specs.framing import encode_frame
from ledger_helpers import assert_ledger_verifies
from test_gateway_codes import CUSTOMER, DUE, NO_PREPAY, payments_count
from test_gateway_counter import STANDARD, seed


@pytest.fixture
def url(db_url):
    seed(db_url, STANDARD)
    return db_url


async def closed_within(client, clock: Clock, seconds: float) -> bool:
    clock.advance(seconds)
    await task.deferLater(reactor, 0.05)
    return client.closed.called


@pytest_twisted.ensureDeferred
async def test_half_frame_is_timed_out_and_closed(url):
    clock = Clock()
    gw = await start_gateway(reactor, url, clock=clock)
    bank = await Bank(reactor, gw).connect()
    try:
        frame = encode_frame(bank.dialect.framing, bank.encode("0800", {**bank.head(), "70": "301"}, key=False))
        bank.client.transport.write(frame[: len(frame) // 2])
        await task.deferLater(reactor, 0.05)
        assert not await closed_within(bank.client, clock, 9.9)
        assert await closed_within(bank.client, clock, 0.2)  # frame_timeout_s = 10
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_silent_peer_is_timed_out_and_closed(url):
    clock = Clock()
    gw = await start_gateway(reactor, url, clock=clock, settings=make_settings(url, **{
        "01020000": {"idle_timeout_s": 30}}))
    bank = await Bank(reactor, gw).connect()
    try:
        assert not await closed_within(bank.client, clock, 29)
        assert await closed_within(bank.client, clock, 2)
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_idle_link_is_echoed_and_echo_answers_are_not_answered(url):
    clock = Clock()
    gw = await start_gateway(reactor, url, clock=clock)
    bank = await connected_bank(reactor, gw)  # identified by its sign-on
    try:
        sent_before = gw.metrics.transactions.labels("01020000", "0810", "-", "--")._value.get()
        clock.advance(60)  # echo_interval_s
        await task.deferLater(reactor, 0.1)
        assert bank.client.echoes_answered == 1  # the gateway echoed; the bank answered 0810
        clock.advance(60)
        await task.deferLater(reactor, 0.1)
        assert bank.client.echoes_answered == 2
        # the bank's 0810s were consumed silently: nothing was counted as answered
        assert gw.metrics.transactions.labels("01020000", "0810", "-", "--")._value.get() == sent_before
        assert not bank.client.closed.called
    finally:
        await stop_all(gw, bank)


@pytest_twisted.ensureDeferred
async def test_connection_flood_is_refused_without_affecting_other_banks(url):
    settings = make_settings(url, **{"01020000": {"max_connections": 2}, "01050000": {"max_connections": 2}})
    gw = await start_gateway(reactor, url, settings=Settings.model_validate({
        **settings_tree(url, **{"01020000": {"max_connections": 2}}),
        "gateway": {**settings_tree(url)["gateway"], "listeners": [
            {"name": "ascii", "port": 0, "dialect": "ascii", "banks": ["01020000"]},
            {"name": "bcd", "port": 0, "dialect": "bcd", "banks": ["01050000"]}]}}))
    keep = [await connected_bank(reactor, gw) for _ in range(2)]
    try:
        flood = [await Bank(reactor, gw).connect() for _ in range(20)]
        await task.deferLater(reactor, 0.1)
        assert all(b.client.closed.called for b in flood)
        assert gw.metrics.connections_refused.labels("01020000", "limit")._value.get() == 20
        other = await connected_bank(reactor, gw, "01050000")
        assert code_of(await other.send("0100", other.inquiry_fields(CUSTOMER))) == "00"
        assert code_of(await keep[0].send("0100", keep[0].inquiry_fields(CUSTOMER))) == "00"
        other.close()
    finally:
        await stop_all(gw, *keep)


@pytest_twisted.ensureDeferred
async def test_connection_from_a_foreign_network_is_refused(url):
    gw = await start_gateway(reactor, url, settings=make_settings(url, **{
        code: {"allowed_networks": ["10.9.9.0/24"]} for code in ("01020000", "01030000")}))
    try:
        bank = await Bank(reactor, gw).connect()
        await task.deferLater(reactor, 0.1)
        assert bank.client.closed.called
        assert gw.metrics.connections_refused.labels("unknown", "network")._value.get() == 1
    finally:
        await stop_all(gw)


@pytest_twisted.ensureDeferred
async def test_two_banks_two_gateways_pay_one_customer_at_the_same_moment(pg_url):
    """Two gateway instances share only the database; one customer, two banks, one bill."""
    seed(pg_url, STANDARD)
    gw1 = await start_gateway(reactor, pg_url)
    gw2 = await start_gateway(reactor, pg_url)
    a = await connected_bank(reactor, gw1, "01020000")
    b = await connected_bank(reactor, gw2, "01030000")
    try:
        for round_ in range(5):
            answers = await defer.gatherResults([
                defer.ensureDeferred(a.send("0200", a.payment_fields(NO_PREPAY, 10000))),
                defer.ensureDeferred(b.send("0200", b.payment_fields(NO_PREPAY, 10000)))])
            codes = sorted(code_of(x) for x in answers)
            if round_ == 0:
                assert codes == ["00", "B1"]  # the bill is paid once; the other finds nothing due
            else:
                assert codes == ["B1", "B1"]
        assert payments_count(pg_url) == 1
    finally:
        await stop_all(gw1, a)
        await stop_all(gw2, b)
    assert_ledger_verifies(pg_url)


@pytest_twisted.ensureDeferred
async def test_a_key_another_gateway_replaced_keeps_its_grace_on_both(url):
    """A bank signs on through gw1 (key 1) and then through gw2 (key 2): within a second key 2 is the
    current key on both gateways and key 1 the previous one, accepted for 60 s (docs/spec/INTERFACE.md §4.1) wherever the
    request lands; answers are MACed with key 2; after the grace period key 1 gets A0."""
    clock = Clock()
    gw1 = await start_gateway(reactor, url, clock=clock)
    gw2 = await start_gateway(reactor, url, clock=clock, upgrade=False)
    a = await connected_bank(reactor, gw1)
    b = await connected_bank(reactor, gw2)      # gw2 had never loaded key 1 before it issued key 2
    try:
        first, second = a.mak, b.mak
        assert gw1.key_reload.running           # every KEY_RELOAD_S; here one reload, not a sleep
        await gw1.reload_keys()
        for bank in (a, b):                     # either gateway accepts the replaced key
            answer = await bank.send("0100", bank.inquiry_fields(CUSTOMER), key=first)
            assert code_of(answer) == "00" and bank.mac_ok(answer, second) and not bank.mac_ok(answer, first)
        clock.advance(61)
        for bank in (a, b):
            answer = await bank.send("0100", bank.inquiry_fields(CUSTOMER), key=first)
            assert code_of(answer) == "A0"
            answer = await bank.send("0100", bank.inquiry_fields(CUSTOMER), key=second)
            assert code_of(answer) == "00"
    finally:
        await stop_all(gw1, a)
        await stop_all(gw2, b)


class ReloadWinsTheRace:
    """A key backend whose every load is overtaken by the gateway's periodic reload: the stored
    state is already taken when the request's own refresh gets it back."""

    def __init__(self, keys):
        self.keys, self.backend = keys, keys.backend

    def load(self, bank, channel):
        state = self.backend.load(bank, channel)
        self.keys.take(bank, channel, state)
        return state

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest_twisted.ensureDeferred
async def test_a_key_the_periodic_reload_took_first_is_not_91(url):
    """The first request through gw2 after a sign-on through gw1: its refresh finds the key already
    taken by the reload (nothing changed), and the request is still answered with the key."""
    gw1 = await start_gateway(reactor, url)
    gw2 = await start_gateway(reactor, url, upgrade=False)
    gw2.keys.backend = ReloadWinsTheRace(gw2.keys)
    a = await connected_bank(reactor, gw1)
    b = await connected_bank(reactor, gw2, sign_on=False)
    try:
        b.mak = a.mak
        answer = await b.send("0100", b.inquiry_fields(CUSTOMER))
        assert code_of(answer) == "00" and b.mac_ok(answer, a.mak)
    finally:
        await stop_all(gw1, a)
        await stop_all(gw2, b)


@pytest_twisted.ensureDeferred
async def test_database_going_away_gives_96_and_service_resumes(pg_url, pg_server_url):
    """The gateway reaches PostgreSQL through a proxy the test stops and restarts."""
    from sqlalchemy.engine import make_url

    seed(pg_url, STANDARD)
    target = make_url(pg_url)
    proxy_factory = DatabaseProxy(target.host, target.port)
    proxy = reactor.listenTCP(0, proxy_factory, interface="127.0.0.1")
    proxied = target.set(port=proxy.getHost().port).render_as_string(hide_password=False)
    settings = make_settings(proxied, **{c: {"request_timeout_s": 3} for c in ("01020000", "01030000", "01050000")})
    gw = await start_gateway(reactor, proxied, settings=settings, upgrade=False)
    bank = await connected_bank(reactor, gw)
    try:
        assert code_of(await bank.send("0100", bank.inquiry_fields(CUSTOMER))) == "00"
        port_number = proxy.getHost().port
        await proxy.stopListening()
        proxy_factory.cut()
        answers = await defer.gatherResults([
            defer.ensureDeferred(bank.send("0200", bank.payment_fields(CUSTOMER, DUE))),
            defer.ensureDeferred(bank.send("0100", bank.inquiry_fields(CUSTOMER)))])
        assert [code_of(x) for x in answers] == ["96", "96"]
        assert payments_count(pg_url) == 0  # nothing partly applied
        proxy = reactor.listenTCP(port_number, proxy_factory, interface="127.0.0.1")
        for _ in range(50):
            answer = await bank.send("0200", bank.payment_fields(CUSTOMER, DUE))
            if code_of(answer) != "96":
                break
            await task.deferLater(reactor, 0.2)
        assert code_of(answer) == "00"
        assert payments_count(pg_url) == 1
    finally:
        await stop_all(gw, bank)
        await proxy.stopListening()
    assert_ledger_verifies(pg_url)


@pytest_twisted.ensureDeferred
async def test_stop_does_not_block_the_reactor_while_a_database_call_waits_on_it(sqlite_url):
    """A database call on the gateway's pool may wait for the reactor (in the test above, a
    key read going through the proxy, which the reactor runs): stopping joins the pool off
    the reactor, so the call finishes and stop completes (it used to deadlock)."""
    import threading

    seed(sqlite_url, STANDARD)
    gw = await start_gateway(reactor, sqlite_url)
    released = threading.Event()

    def waits_for_the_reactor():
        return released.wait(10)

    call = gw.ledger.run(waits_for_the_reactor)
    reactor.callLater(0.2, released.set)    # the reactor's part, due after stop has begun
    await stop_all(gw)
    assert await call is True                # released by the reactor, not by the 10 s wait


@pytest_twisted.ensureDeferred
async def test_a_failed_start_is_abandoned_with_its_timers_stopped(sqlite_url):
    """A listener port already taken fails the start; abandoning stops the key reload and the
    log flush with the workers, so nothing keeps running in a process that is about to exit."""
    from twisted.internet.error import CannotListenError
    from twisted.internet.protocol import Factory

    from gateway.daemon import Gateway
    from ledger import migrate

    seed(sqlite_url, STANDARD)
    migrate.upgrade(sqlite_url)
    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    tree = settings_tree(sqlite_url)
    tree["gateway"]["listeners"][0]["port"] = taken.getHost().port
    gw = Gateway(Settings.model_validate(tree), reactor)
    try:
        with pytest.raises(CannotListenError):
            await gw.start()
        gw.abandon()
        assert not gw.key_reload.running and not gw.txlog_flush.running
    finally:
        await taken.stopListening()
        gw.engine.dispose()


class DatabaseProxy(ProxyFactory):
    """A TCP proxy in front of PostgreSQL that the test can cut: the database 'goes away'."""

    def __init__(self, host, port):
        super().__init__(host, port)
        self.live = set()

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        made, lost = proto.connectionMade, proto.connectionLost
        proto.connectionMade = lambda: (self.live.add(proto), made())[1]
        proto.connectionLost = lambda reason: (self.live.discard(proto), lost(reason))[1]
        return proto

    def cut(self) -> None:
        for proto in list(self.live):
            proto.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_serve_can_watch_the_drop_directory(sqlite_url, tmp_path):
    """`gridpay watch` inside `gridpay serve`: a billing file renamed into incoming/ is imported;
    the watcher takes the `[watch]` settings."""
    seed(sqlite_url, STANDARD)
    tree = settings_tree(sqlite_url)
    tree["drop_dir"] = str(tmp_path / "drop")
    tree["gateway"]["watch_drop_dir"] = True
    tree["watch"] = {**tree.get("watch", {}), "hold_bank_files_until_day_ended": False}
    gw = await start_gateway(reactor, sqlite_url, settings=Settings.model_validate(tree))
    try:
        assert gw.watcher.hold_until_day_ended is False
        incoming = tmp_path / "drop" / "incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        part = incoming / ".customers.csv.part"
        part.write_text("customer_no,customer_name,customer_type,status,prepay_allowed,mobile\n"
                        "0150000001,新客户,R,A,Y,13900000001\n", encoding="utf-8")
        part.rename(incoming / "customers.csv")
        processed = tmp_path / "drop" / "processed"
        for _ in range(200):
            if processed.exists() and any(processed.iterdir()):
                break
            await task.deferLater(reactor, 0.1)
        assert any(processed.iterdir()), list((tmp_path / "drop").rglob("*"))
        bank = await connected_bank(reactor, gw)
        assert code_of(await bank.send("0100", bank.inquiry_fields("0150000001"))) == "00"
        bank.close()
    finally:
        await stop_all(gw)


@pytest_twisted.ensureDeferred
async def test_readiness_and_bank_series_from_the_start(url):
    gw = await start_gateway(reactor, url)
    try:
        assert gw.listeners_up() == (2, 2)
        for bank in ("01020000", "01030000", "01050000"):  # never connected: the series exist, at 0
            assert gw.metrics.registry.get_sample_value("gridpay_connections", {"bank": bank}) == 0
            assert gw.metrics.registry.get_sample_value(
                "gridpay_bank_signed_on", {"bank": bank, "channel": "counter"}) == 0
        gw.draining = True  # what SIGTERM sets first: HAProxy must stop sending new links here
        assert gw.listeners_up() == (0, 2)
        gw.draining = False
    finally:
        await stop_all(gw)


def test_statement_timeout_bounds_each_statement(pg_url):
    import sqlalchemy

    from ledger.db import make_engine

    engine = make_engine(pg_url, statement_timeout_s=0.2)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="statement timeout"):
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select pg_sleep(2)"))
    engine.dispose()

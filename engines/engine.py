"""``DebitEngine``: one engine process's work - claim chunks, send debits, post results, reverse.

Runs on a Twisted reactor. Database work happens off the reactor: claims and heartbeats in a
small thread pool, results and reversal bookkeeping in the writer process (``engines.writer``).
All timing (poll interval, leases, the link's timeouts, reversal repeats) reads ``clock``
(default: the reactor), and timestamps come from ``now()`` - tests inject both.

Per debit (docs/debit-engines.md has the whole argument):

    pending --(identity committed, chunk claimed)--> sent --0200--> answer 00  -> approved
                                                                 answer A0  -> new identity committed, 0200 again
                                                                 answer xx  -> declined
                                                                 no answer  -> unknown + reversal row
    reversal row: 0420, then 0421 every reversal_interval_s, at most reversal_max repeats,
                  each attempt counted in the database before it is written;
                  0430 00 -> debit reversed; 0430 other -> refused (open);
                  none after all attempts -> unanswered (debit stays unknown, open for reconciliation)
"""
from __future__ import annotations

import logging
import socket
import time
from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from typing import Callable

from twisted.internet import defer, task, threads
from twisted.python.threadpool import ThreadPool

from engines import store
from engines.lease_keeper import LeaseKeeper
from engines.link import CHANNEL as LINK_CHANNEL
from engines.link import BankLink, DebitTimeout, LinkError, NotSent, reversal_fields
from ledger.key_store import KeyStore
from ledger.key_store_db import DbKeyBackend
from engines.writer import (ChunkDone, Note, Result, ReversalAnswered, ReversalBegun, ReversalUnanswered, Unknown,
                            Writer)
from config.clock import Clock
from ledger.posting import DEBIT_ACTOR, DebitResult

log = logging.getLogger("gridpay.debit.engine")


def default_name() -> str:
    import os
    return f"{socket.gethostname()}:{os.getpid()}"


class DebitEngine:
    def __init__(self, settings, reactor, db, *, name: str | None = None, banks: list[str] | None = None,
                 clock=None, lease_s: float = 30.0, poll_s: float = 0.5,
                 chunks_ahead: int = 2, only_chunks: list[int] | None = None, files: bool = True,
                 writer_batch: int = 1000, writer_wait_s: float = 0.05, retry_unsent_s: float = 1.0,
                 single: bool | None = None, housekeeping_s: float | None = None,
                 link_factory: Callable | None = None, actor: str = DEBIT_ACTOR, link_metrics=None,
                 keep_leases: bool | None = None):
        self.settings, self.reactor, self.db = settings, reactor, db
        # now, field 7's time, business dates and timers: the reactor's, or the task.Clock a test hands in
        self.clock = Clock.of(settings.business, timer=clock or reactor)
        self.now = self.clock.now
        # one for every link: the keys of all banks are polled in one query (``_load_keys``)
        self.key_backend = DbKeyBackend(db, settings.zmk, self.clock)
        self.name = name or default_name()
        self.lease_s, self.poll_s, self.chunks_ahead = lease_s, poll_s, chunks_ahead
        # leases renewed, dead engines' reversals looked for and MAC keys reloaded this often, not
        # on every poll: between them a poll costs the database its claim and file work, if any
        self.housekeeping_s = min(1.0, lease_s / 3) if housekeeping_s is None else housekeeping_s
        self._housekeeping_at = float("-inf")
        self._renewals: task.LoopingCall | None = None
        # leases renewed off the reactor while it is late (engines.lease_keeper); not on a test's
        # injected clock, whose time stands still until the test moves it
        keep = clock is None if keep_leases is None else keep_leases
        self.keeper = LeaseKeeper(self._renew_in_db, self._renewed_off_reactor, self.housekeeping_s,
                                  self.name) if keep else None
        self.only_chunks = only_chunks
        self.files = files
        self.retry_unsent_s = retry_unsent_s
        self.actor = actor
        self.single = db.dialect.name == "sqlite" if single is None else single
        online = [code for code, b in settings.banks.items() if "debit" in b.channels and b.debit.mode == "online"]
        self.banks = [b for b in (banks or online) if b in online]
        self.file_banks = [code for code, b in settings.banks.items()
                           if "debit" in b.channels and b.debit.mode == "file" and (banks is None or code in banks)]
        self._link_factory = link_factory
        self.link_metrics = link_metrics
        self.links: dict[str, BankLink] = {}
        self.stats: Counter = Counter()
        self.chunks: dict[int, dict] = {}          # chunk_id -> {"bank", "left"}
        self.closing: set[int] = set()             # chunks settled in memory, their 'done' not yet committed
        # claimed debits not yet handed to their link, which takes them as its window frees (``_feed``)
        self.unsent: dict[str, deque[store.SendItem]] = {}
        self.reversals: dict[int, store.ReverseItem] = {}
        self.rev_keys: dict[tuple, int] = {}       # reversal identity (7, 11) -> debit_id
        self.timed_out: dict[tuple, int] = {}      # debit identity (7, 11) -> debit_id, for late answers
        self.writer = Writer(reactor, db.url.render_as_string(hide_password=False), self.clock,
                             max_batch=writer_batch, max_wait_s=writer_wait_s,
                             statement_timeout_s=settings.database.statement_timeout_s,
                             backend_nice=settings.engines.database_nice,
                             on_batch=lambda size, seconds: self._check_watchers())
        self.pool = ThreadPool(2, 4, name=f"debit-db-{self.name}")
        self._loop: task.LoopingCall | None = None
        self._ticking = False
        self._tick_waiters: list[defer.Deferred] = []
        self._claim_turn = 0          # which bank claims first (they take turns)
        self._first = True
        self._stopping = False
        self._watchers: list[tuple[Callable[[], bool], defer.Deferred]] = []

    # --- lifecycle -------------------------------------------------------------------------

    def _db(self, fn, *args, **kw) -> defer.Deferred:
        return threads.deferToThreadPool(self.reactor, self.pool, fn, *args, **kw)

    def make_link(self, code: str) -> BankLink:
        cfg = self.settings.bank(code)
        stans = store.BlockStans(self.db, code, self.clock)
        if self._link_factory is not None:
            return self._link_factory(code, cfg, stans, self._late)
        # every engine (process) of a bank must use the MAK the bank issued last (docs/spec/INTERFACE.md §4.1: one key per
        # bank and channel): keys go through the database, as the counter gateway's do
        keys = KeyStore(self.clock, grace_s=self.settings.gateway.key_grace_s, backend=self.key_backend)
        keys.refresh(code, LINK_CHANNEL)
        return BankLink(self.reactor, code, cfg, self.settings.zmk(code), clock=self.clock,
                        on_late_response=lambda m, code=code: self._late(code, m), stans=stans,
                        keys=keys, metrics=self.link_metrics)

    def start(self) -> defer.Deferred:
        """Register (refused if SQLite already has an engine, or the name is taken), start the
        writer and the links, and begin polling. Fires once registered."""
        self.pool.start()
        d = self._db(store.register_instance, self.db, name=self.name, banks=self.banks + self.file_banks,
                     now=self.now(), lease_s=self.lease_s, single=self.single)

        def registered(_):
            return self.writer.start().addCallback(running)

        def running(_):
            for code in self.banks:
                link = self.links[code] = self.make_link(code)
                self.unsent[code] = deque()
                link.feeder = lambda room, code=code: self._feed(code, room)
                link.start()
            if self.keeper is not None:
                self.keeper.start()
            self._renewals = task.LoopingCall(self._renew)
            self._renewals.clock = self.clock
            self._renewals.start(self.housekeeping_s, now=True).addErrback(
                lambda f: log.error("engine %s: lease renewals stopped: %s", self.name, f.getTraceback()))
            self._loop = task.LoopingCall(self.tick)
            self._loop.clock = self.clock
            self._loop.start(self.poll_s, now=True).addErrback(lambda f: log.error("engine loop: %s", f.getTraceback()))
            log.info("engine %s started: online banks %s, file banks %s", self.name, self.banks, self.file_banks)
            return self

        def failed(f):
            self.pool.stop()
            return f
        return d.addCallbacks(registered, failed)

    @defer.inlineCallbacks
    def stop(self, grace_s: float = 5.0):
        """Stop claiming, let answers in flight arrive (up to grace_s), stop the links, drain the
        writer, then give up every lease so other engines take over at once."""
        self._stopping = True
        for loop in (self._loop, self._renewals):
            if loop is not None and loop.running:
                loop.stop()
        if self.keeper is not None:
            yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.keeper.stop)
        for link in self.links.values():
            yield link.stop(grace_s)
        yield self.writer.stop()
        try:
            yield self._db(store.unregister_instance, self.db, self.name, self.now())
        except Exception:  # noqa: BLE001
            log.exception("unregistering %s failed", self.name)
        # joined off the reactor: a call still on the pool may need the reactor to finish
        yield threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.pool.stop)

    def when(self, condition: Callable[[], bool]) -> defer.Deferred:
        """Fires when condition() holds (checked after each tick and each delivery)."""
        d = defer.Deferred()
        if condition():
            d.callback(None)
        else:
            self._watchers.append((condition, d))
        return d

    def _check_watchers(self) -> None:
        for item in list(self._watchers):
            if item[0]():
                self._watchers.remove(item)
                item[1].callback(None)

    @property
    def idle(self) -> bool:
        return not self.chunks and not any(r.busy for r in self.reversals.values())

    # --- the poll ------------------------------------------------------------------------------

    def poll(self) -> defer.Deferred:
        """One poll now (after the one running, if any); fires when it is done."""
        if self._ticking:
            d = defer.Deferred()
            self._tick_waiters.append(d)
            return d.addCallback(lambda _: self.poll())
        return self.tick() or defer.succeed(None)

    def tick(self) -> defer.Deferred | None:
        if self._ticking or self._stopping:
            return None
        self._ticking = True
        include_own, self._first = self._first, False
        now = self.now()
        want = {code: max(0, self.chunks_ahead - sum(1 for c in self.chunks.values() if c["bank"] == code))
                for code in self.banks if self.links[code].ready}
        clock_now = self.clock.seconds()
        housekeeping = include_own or clock_now >= self._housekeeping_at
        if housekeeping:
            self._housekeeping_at = clock_now + self.housekeeping_s
        d = self._db(self._db_tick, now, include_own, want, housekeeping)
        d.addCallback(self._take_keys)
        d.addCallback(self._dispatch)
        d.addErrback(lambda f: log.error("engine %s poll failed: %s", self.name, f.getErrorMessage()))

        def done(_):
            self._ticking = False
            self._pump_reversals()
            self._check_watchers()
            waiters, self._tick_waiters = self._tick_waiters, []
            for w in waiters:
                w.callback(None)
        d.addBoth(done)
        return d

    def _load_keys(self) -> dict:
        """The banks' MAC keys stored since this engine's (another engine may have signed on): read
        on the pool thread, in one query, taken on the reactor's (``_take_keys``)."""
        if not any(link.keys.backend is self.key_backend for link in self.links.values()):
            return {}   # links a test made, with keys of their own
        known = {code: link.keys.version(code, LINK_CHANNEL) for code, link in self.links.items()}
        try:
            return self.key_backend.newer(LINK_CHANNEL, known)
        except Exception:  # noqa: BLE001
            log.warning("engine %s: cannot reload the banks' MAC keys", self.name)
            return {}

    def _take_keys(self, result):
        *rest, loaded = result
        for code, state in loaded.items():
            self.links[code].keys.take(code, LINK_CHANNEL, state)
        return tuple(rest)

    def _db_tick(self, now: datetime, include_own: bool, want: dict[str, int], housekeeping: bool):
        """housekeeping (due every housekeeping_s): a dead engine's reversals and the banks' keys too."""
        revs, keys = [], {}
        if housekeeping:
            revs = store.claim_reversals(self.db, owner=self.name, banks=self.banks, now=now,
                                         lease_s=self.lease_s, include_own=include_own)
            keys = self._load_keys()
        cut_short = self._claim(want, include_own)
        if self.files and self.file_banks:
            from engines import files
            files.run_file_work(self.db, self.settings, now, owner=self.name, banks=self.file_banks,
                                clock=self.clock)
        return cut_short, revs, keys

    def _claim(self, want: dict[str, int], include_own: bool) -> bool:
        """Chunks for the banks that want them, one claim at a time, each handed to the reactor
        thread (``_take_chunks``: held, and so renewed) as soon as it commits. On a loaded database
        a claim (a thousand debits' identities) takes seconds: the claims stop once they have taken
        a third of the lease, so that a poll does not keep the next one's housekeeping (a dead
        engine's reversals, the keys) waiting. The banks take turns at going first. Answers whether
        the claims stopped short."""
        claimed = False
        started = time.monotonic()
        banks = [code for code, n in want.items() if n > 0]
        if banks:
            self._claim_turn = (self._claim_turn + 1) % len(banks)
            banks = banks[self._claim_turn:] + banks[:self._claim_turn]
        for code in banks:
            for _ in range(want[code]):
                if claimed and time.monotonic() - started > self.lease_s / 3:
                    return True
                got = store.claim_chunks(self.db, owner=self.name, banks=[code], now=self.now(),
                                         lease_s=self.lease_s, clock=self.clock, limit=1, include_own=include_own,
                                         only_chunks=self.only_chunks, actor=self.actor)
                if not got:
                    break
                # held (and so renewed) from now on, not once the poll's other claims are done
                if self.keeper is not None:
                    self.keeper.claimed(ch.chunk_id for ch in got)
                self.reactor.callFromThread(self._take_chunks, got)
                claimed = True
        return False

    def _dispatch(self, result) -> None:
        cut_short, revs = result
        if cut_short:
            self.stats["claims_deferred"] += 1
        for item in revs:
            self._add_reversal(item)

    def _take_chunks(self, claimed: list) -> None:
        """Chunks just claimed (on the reactor thread): held, their debits queued for the links,
        the debits found in flight reversed."""
        for ch in claimed:
            self.stats["chunks"] += 1
            left = len(ch.to_send)
            for item in ch.to_reverse:
                self.stats["orphans_reversed"] += 1
                self._add_reversal(item)
            if left == 0:
                self._close(ch.chunk_id)
                continue
            self.chunks[ch.chunk_id] = {"bank": ch.bank_code, "left": left}
            self.unsent[ch.bank_code].extend(ch.to_send)
        if self.keeper is not None:
            self.keeper.holding(*self._holding())
            self.keeper.taken(ch.chunk_id for ch in claimed)
        for bank in {ch.bank_code for ch in claimed}:
            self.links[bank].pump()
        if any(ch.to_reverse for ch in claimed):
            self._pump_reversals()

    def _close(self, chunk_id: int) -> None:
        """The chunk's 'done' goes through the writer, and its lease is renewed until that commits:
        a busy writer took longer than the lease, the other engine claimed the chunk again and took
        over the reversals of its unknown debits, both engines then sending them (run r13)."""
        self.closing.add(chunk_id)
        self.writer.submit(ChunkDone(chunk_id, self.name), lambda res: self.closing.discard(chunk_id))

    def _renew(self) -> defer.Deferred | None:
        """The leases of the chunks and reversals held, and the instance's heartbeat: on a timer of
        their own (every housekeeping_s), beside the polls, not after a poll's claims - under load
        one claim can outlast the lease, and a lapsed lease lets another engine take a chunk over
        and reverse its debits in flight. The LoopingCall waits for one renewal before the next."""
        if self._stopping:
            return None
        holding = self._holding()
        if self.keeper is not None:
            self.keeper.holding(*holding)
        d = self._db(self.keeper.renew if self.keeper is not None else self._renew_in_db, *holding)
        d.addCallback(lambda held: self._drop_lost(holding, *held))
        return d.addErrback(lambda f: log.error("engine %s: renewing its leases failed: %s", self.name,
                                                f.getErrorMessage()))

    def _holding(self) -> tuple[set[int], set[int]]:
        """The chunks (those closing too) and reversals this engine holds; read on the reactor thread."""
        return set(self.chunks) | self.closing, set(self.reversals)

    def _renew_in_db(self, chunk_ids: set[int], reversal_ids: set[int]) -> tuple[set[int], set[int]]:
        return store.renew(self.db, owner=self.name, now=self.now(), lease_s=self.lease_s,
                           chunk_ids=chunk_ids, reversal_ids=reversal_ids)

    def _renewed_off_reactor(self, holding, held) -> None:
        """The keeper renewed (on its thread): what it found lost is judged on the reactor's."""
        def judged():
            self.stats["leases_renewed_off_reactor"] += 1
            self._drop_lost(holding, *held)
        self.reactor.callFromThread(judged)

    def _drop_lost(self, holding: tuple[set[int], set[int]], held_chunks: set[int], held_revs: set[int]) -> None:
        """What another engine took over after our lease lapsed is theirs now. Only what was held
        when the renewal began is judged: a poll may have claimed more meanwhile."""
        lost = [cid for cid in holding[0] if cid not in held_chunks and cid in self.chunks]
        for cid in lost:
            log.warning("engine %s: chunk %d was taken over by another engine", self.name, cid)
            self.chunks.pop(cid, None)
        if lost:    # its debits not yet handed over never go: should the chunk come back, it brings them anew
            for bank, queue in self.unsent.items():
                self.unsent[bank] = deque(item for item in queue if item.chunk_id in self.chunks)
        for debit_id in [d for d in holding[1] if d not in held_revs and d in self.reversals
                         and not self.reversals[d].busy]:
            self.reversals.pop(debit_id, None)

    # --- debits ----------------------------------------------------------------------------

    def _feed(self, bank: str, room: int) -> None:
        """The link has room for ``room`` requests and none waiting: the bank's next claimed debits
        go. Handed over all at once, most of a chunk would wait out the link's timeout in its queue
        and fail unsent, to be queued again. A debit of a chunk lost meanwhile is not sent: the
        engine that took the chunk over reverses it (it may have been sent under that identity)."""
        queue, link = self.unsent[bank], self.links[bank]
        while queue and room > 0 and not self._stopping:
            item = queue.popleft()
            if item.chunk_id in self.chunks:
                self._send(link, item)
                room -= 1

    def _send(self, link: BankLink, item: store.SendItem) -> None:
        self.stats["sent"] += 1
        d = link.send("0200", item.fields)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(item,), errbackArgs=(link, item))

    def _answered(self, message, item: store.SendItem) -> None:
        code = message.fields.get("39", "")
        if code == "A0" and item.tries < 3 and not self._stopping:
            # our MAC did not verify (another engine's sign-on replaced the key): the bank applied
            # nothing (§4.2) but has answered that identity, so the debit goes again with the
            # current key under a new one (§4.7), committed before it is written
            item.tries += 1
            self.stats["resent_after_A0"] += 1
            link = self.links[item.bank_code]
            link.keys.refresh(item.bank_code, LINK_CHANNEL)
            self._send_again(link, item)
            return
        if code == "00":
            self.stats["approved"] += 1
            posting = DebitResult(item.debit_id, "approved", self.now(), "00",
                                  (message.fields.get("38") or "").strip() or None, actor=self.actor)
        else:
            self.stats[f"declined_{code}"] += 1
            posting = DebitResult(item.debit_id, "declined", self.now(), code, detail=_er(message), actor=self.actor)
        self.writer.submit(Result(posting), lambda res, item=item, posting=posting: self._posted(item, posting, res))

    def _send_again(self, link: BankLink, item: store.SendItem) -> None:
        """After A0: a new identity, committed, then the send. Its field 7 must differ from the
        refused one's (§4.7 "new fields 7 and 11"), so an A0 within the same second waits for
        the next one."""
        if self._stopping or item.chunk_id not in self.chunks:
            return  # the debit stays sent under the refused identity: whoever claims the chunk reverses it
        now = self.now()
        if self._within_the_second_of(item.fields["7"], now, self._send_again, link, item):
            return

        def identified(fields):
            item.fields = fields
            if not self._stopping and item.chunk_id in self.chunks:
                self._send(link, item)

        def failed(f):
            log.warning("debit %d: a new identity after A0 was not recorded (%s); trying again", item.debit_id,
                        f.getErrorMessage())
            self.stats["a0_identity_retries"] += 1
            self.clock.callLater(self.retry_unsent_s, self._send_again, link, item)
        self._db(store.send_again_after_a0, self.db, item, now=now, clock=self.clock,
                 actor=self.actor).addCallbacks(identified, failed)

    def _within_the_second_of(self, transmitted: str, now: datetime, retry, *args) -> bool:
        """A new identity needs a field 7 other than the refused one's (§4.7): within that
        second, ``retry(*args)`` is called again at the next one, and this answers True."""
        if store.transmitted_of(now, self.clock) != transmitted:
            return False
        self.clock.callLater(1.0 - now.microsecond / 1e6, retry, *args)
        return True

    def _posted(self, item: store.SendItem, posting: DebitResult, res) -> None:
        if isinstance(res, Exception):
            # the ledger is unreachable: post again later; the answer is not lost while we live,
            # and if we die the debit stays 'sent' and the next engine reverses it
            self.stats["post_retries"] += 1
            self.clock.callLater(1.0, self.writer.submit, Result(posting),
                                 lambda r: self._posted(item, posting, r))
            return
        if not (res.ok or res.replayed):
            log.warning("debit %d: the ledger answered %s %s", item.debit_id, res.response_code, res.detail)
            self.stats[f"ledger_{res.response_code}"] += 1
        self._settled(item.chunk_id)

    def _failed(self, failure, link: BankLink, item: store.SendItem) -> None:
        exc = failure.value
        if isinstance(exc, NotSent) and not self._stopping and item.chunk_id in self.chunks:
            # certainly never written: the same identity may go again later
            self.stats["not_sent_retry"] += 1
            self.clock.callLater(self.retry_unsent_s, self._resend, link, item)
            return
        if isinstance(exc, NotSent):
            return  # stopping: the debit stays 'sent'; whoever claims the chunk next reverses it
        kind = "connection lost" if type(exc).__name__ == "OutcomeUnknown" else "no answer"
        if not isinstance(exc, LinkError):
            log.error("debit %d: send failed: %s", item.debit_id, exc)
        self.stats["unknown"] += 1
        self.timed_out[(item.fields["7"], item.fields["11"])] = item.debit_id
        self._unknown(item.debit_id, item.bank_code, store.original_fields(
            item.bank_code, item.fields["7"], item.fields["11"], item.fields["37"], int(item.fields["4"]),
            _cn(item.fields)), f"{kind} within {link.cfg.timeout_s:g} s: reversing", item.chunk_id)

    def _resend(self, link: BankLink, item: store.SendItem) -> None:
        if self._stopping or item.chunk_id not in self.chunks:
            return
        self._send(link, item)

    def _unknown(self, debit_id: int, bank: str, original: dict, detail: str, chunk_id: int | None) -> None:
        op = Unknown(DebitResult(debit_id, "unknown", self.now(), detail=detail, actor=self.actor), bank, original,
                     self.name, self.lease_s)

        def written(res):
            if isinstance(res, Exception):
                self.stats["unknown_write_retries"] += 1
                self.clock.callLater(1.0, self.writer.submit, op, written)
                return
            if isinstance(res, store.ReverseItem):
                self._add_reversal(res)
                self._pump_reversals()
            else:   # refused: another engine took the chunk over and settled the debit meanwhile
                self.stats["unknown_already_settled"] += 1
                log.warning("debit %d: not unknown: the ledger answered %s %s", debit_id, res.response_code,
                            res.detail)
            if chunk_id is not None:
                self._settled(chunk_id)
        self.writer.submit(op, written)

    def _settled(self, chunk_id: int) -> None:
        chunk = self.chunks.get(chunk_id)
        if chunk is None:
            return
        chunk["left"] -= 1
        if chunk["left"] <= 0:
            del self.chunks[chunk_id]
            self._close(chunk_id)
            if not self._stopping:
                self.reactor.callLater(0, self.tick)

    # --- late answers ----------------------------------------------------------------------

    def _late(self, bank: str, message) -> None:
        f = message.fields
        key = (f.get("7", "").zfill(10), f.get("11", "").zfill(6))
        if message.mti == "0430":
            debit_id = self.rev_keys.get(key)
            if debit_id is not None and debit_id in self.reversals:
                self.stats["late_0430_counted"] += 1
                self._reversal_answered(self.reversals[debit_id], message)
                return
        debit_id = self.timed_out.get(key)
        self.stats[f"late_{message.mti}"] += 1
        log.warning("bank %s: late %s %s/%s 39=%s after its reversal began: changes nothing", bank, message.mti,
                    key[0], key[1], f.get("39"))
        if debit_id is not None:
            self.writer.submit(Note(debit_id, "late_answer", message.mti, f.get("39"),
                                    "answer after the timeout; the debit is being reversed: ignored", self.actor),
                               lambda res: None)

    # --- reversals -------------------------------------------------------------------------

    def _add_reversal(self, item: store.ReverseItem) -> None:
        if item.debit_id in self.reversals or item.bank_code not in self.links:
            return
        self.reversals[item.debit_id] = item
        self.rev_keys[(item.transmitted, item.stan)] = item.debit_id

    def _pump_reversals(self) -> None:
        if self._stopping:
            return
        now = self.now()
        cfg_of = {code: self.links[code].cfg for code in self.links}
        for item in list(self.reversals.values()):
            if item.busy or item.next_at > now:
                continue
            cfg = cfg_of[item.bank_code]
            if item.attempts >= 1 + cfg.reversal_max:
                item.busy = True
                self.stats["reversal_unanswered"] += 1
                log.warning("debit %d: reversal unanswered after %d attempts: open for reconciliation",
                            item.debit_id, item.attempts)
                self.writer.submit(ReversalUnanswered(item.debit_id, item.attempts, self.actor),
                                   lambda res, item=item: self.reversals.pop(item.debit_id, None))
                continue
            if not self.links[item.bank_code].ready:
                continue
            item.busy = True
            attempt = item.attempts + 1
            mti = "0420" if attempt == 1 or item.fresh_identity else "0421"
            next_at = now + timedelta(seconds=cfg.reversal_interval_s)
            self.writer.submit(ReversalBegun(item.debit_id, attempt, mti, next_at, self.actor),
                               lambda res, item=item, mti=mti, next_at=next_at, attempt=attempt:
                               self._reversal_counted(item, res, mti, attempt, next_at))

    def _reversal_counted(self, item: store.ReverseItem, res, mti: str, attempt: int, next_at: datetime) -> None:
        if isinstance(res, Exception):
            item.busy = False
            item.next_at = self.now() + timedelta(seconds=1)
            return
        item.attempts = attempt
        item.next_at = next_at
        item.fresh_identity = False
        link = self.links[item.bank_code]
        fields = reversal_fields(item.original, transmitted=item.transmitted, stan=item.stan)
        self.stats[f"sent_{mti}"] += 1
        d = link.send(mti, fields)

        def answered(message):
            self._reversal_answered(item, message)

        def failed(f):
            if item.debit_id not in self.reversals:
                return
            item.busy = False
            if isinstance(f.value, NotSent):
                item.attempts -= 1   # never written: this attempt does not count (the DB count is rewritten)
                item.next_at = self.now() + timedelta(seconds=self.retry_unsent_s)
            elif isinstance(f.value, DebitTimeout):
                item.next_at = max(next_at, self.now())
                self.stats["reversal_timeouts"] += 1
            else:
                log.error("debit %d: reversal send failed: %s", item.debit_id, f.value)
                item.next_at = self.now() + timedelta(seconds=self.retry_unsent_s)
            self._schedule_pump(item.next_at)
        d.addCallbacks(answered, failed)

    def _schedule_pump(self, at: datetime) -> None:
        delay = max(0.0, (at - self.now()).total_seconds())
        self.clock.callLater(delay, self._pump_reversals)

    def _reversal_answered(self, item: store.ReverseItem, message) -> None:
        if self.reversals.get(item.debit_id) is not item:
            return
        code = message.fields.get("39", "")
        item.busy = True          # done: never again (or until its new identity is committed)
        item.next_at = datetime.max.replace(tzinfo=timezone.utc)
        if code in store.NOTHING_APPLIED:
            if not self._stopping:  # else the row stays pending: whoever claims it next goes on
                self._reversal_again(item, code)
            return
        self.stats["reversed" if code == "00" else f"reversal_refused_{code}"] += 1

        def written(res):
            if isinstance(res, Exception):
                self.clock.callLater(1.0, self.writer.submit, ReversalAnswered(item.debit_id, code, self.actor),
                                     written)
                return
            self.reversals.pop(item.debit_id, None)
            self.rev_keys.pop((item.transmitted, item.stan), None)
        self.writer.submit(ReversalAnswered(item.debit_id, code, self.actor), written)

    def _reversal_again(self, item: store.ReverseItem, code: str) -> None:
        """The bank applied nothing (A0, 91, 96) and keeps that answer for the identity, so the
        reversal goes again as a 0420 under a new one, committed first; it counts as an attempt.
        Its field 7 must differ from the refused one's (``_within_the_second_of``)."""
        if self._stopping or self.reversals.get(item.debit_id) is not item:
            return
        now = self.now()
        if self._within_the_second_of(item.transmitted, now, self._reversal_again, item, code):
            return
        if code == "A0":
            self.links[item.bank_code].keys.refresh(item.bank_code, LINK_CHANNEL)

        def identified(identity):
            self.stats[f"reversal_resent_after_{code}"] += 1
            self.rev_keys.pop((item.transmitted, item.stan), None)
            item.transmitted, item.stan = identity
            self.rev_keys[identity] = item.debit_id
            item.fresh_identity, item.busy, item.next_at = True, False, self.now()
            self._pump_reversals()

        def failed(f):
            log.warning("debit %d: a new reversal identity after %s was not recorded (%s); trying again",
                        item.debit_id, code, f.getErrorMessage())
            self.clock.callLater(self.retry_unsent_s, self._reversal_again, item, code)
        self._db(store.reversal_again_after_refusal, self.db, item, code, now=now, clock=self.clock,
                 actor=self.actor).addCallbacks(identified, failed)


def _er(message) -> str:
    try:
        return (message.tlv.get("ER") or "")[:200]
    except Exception:  # noqa: BLE001
        return ""


def _cn(fields: dict) -> str:
    from iso8583_specs.tlv import Tlv
    return Tlv.parse(fields["48"]).get("CN")

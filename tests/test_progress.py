"""ledger.progress: plain lines off a terminal (systemd, cron, pipes), a summary at the end."""
from __future__ import annotations

import io

from ledger.progress import NoProgress, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_every_interval_with_rate_and_eta_and_a_summary():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, every_s=5, clock=clock)   # a StringIO is no terminal: plain lines
    assert not p.terminal
    p.start("bills.csv: applying", total=100)
    clock.now += 1
    p.advance(10)
    assert out.getvalue() == ""                 # not yet 5 s since the start
    clock.now += 5
    p.advance(20)
    assert out.getvalue() == "bills.csv: applying: 30/100 lines (30%), 5 lines/s, ETA 14 s\n"
    clock.now += 2
    p.advance(10)                               # 2 s after the last line: nothing
    assert out.getvalue().count("\n") == 1
    clock.now += 2
    p.finish()
    assert out.getvalue().splitlines()[-1] == "bills.csv: applying: 40 lines in 10.0 s (4 lines/s)"
    p.finish("customers customers.csv: 40 line(s), 40 applied")
    assert out.getvalue().splitlines()[-1] == "customers customers.csv: 40 line(s), 40 applied"


def test_set_done_with_a_changing_total_and_no_total():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, every_s=0, clock=clock)
    p.start("batch 7", total=None, unit="debits")
    clock.now += 2
    p.set_done(50)
    assert out.getvalue().splitlines()[-1] == "batch 7: 50 debits, 25 debits/s"
    clock.now += 2
    p.set_done(100, total=400)                  # the total became known
    assert out.getvalue().splitlines()[-1] == "batch 7: 100/400 debits (25%), 25 debits/s, ETA 12 s"
    clock.now += 1
    p.set_done(250, total=250)                  # and shrank: done, no ETA
    assert out.getvalue().splitlines()[-1] == "batch 7: 250/250 debits (100%), 50 debits/s"
    p.start("batch 8", total=10)                # reused for the next job: counting from 0 again
    clock.now += 1
    p.advance(5)
    assert out.getvalue().splitlines()[-1] == "batch 8: 5/10 lines (50%), 5 lines/s, ETA 1 s"


def test_no_progress_says_nothing():
    p = NoProgress()
    assert p.start("x", 10) is p
    p.advance(3)
    p.set_done(5, 20)
    p.finish("done")


def test_terminal_gets_a_bar_and_the_summary_after_it():
    out, clock = io.StringIO(), Clock()
    p = Progress(out, clock=clock, terminal=True)
    p.start("customers.csv", total=1000)
    p.advance(500)
    clock.now += 1
    p.finish()
    text = out.getvalue()
    assert "customers.csv" in text and "\r" in text          # tqdm's bar, redrawn in place
    assert text.endswith("customers.csv: 500 lines in 1.0 s (500 lines/s)\n")

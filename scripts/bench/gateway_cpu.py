"""CPU per payment of the gateway process and of the load generator, per thread (a profiling aid)."""
import sys, os, subprocess, tempfile, time, json, psutil, threading
sys.path[:0] = ["/work/main", "/work/main/tests"]
from pathlib import Path
from ledger_helpers import new_engine, setup_customers, add_banks
from process_harness import GatewayProcess
tmp = Path(tempfile.mkdtemp())
url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/x.db"
e = new_engine(url)
with e.begin() as c: add_banks(c, "01020000", "01030000", "01050000")
nums = setup_customers(e, 8000, bills_each=1, prefix=f"Q{int(time.time())%100000}"); e.dispose()
(tmp / "c.txt").write_text("\n".join(nums))
gw = GatewayProcess(tmp, url).start()
p = psutil.Process(gw.proc.pid)
gw.sim("ascii", "01020000", "ascii", tmp / "c.txt", tmp / "w.csv", "--count", "200")
c0 = p.cpu_times(); t0 = time.time(); th0 = {t.id: t.user_time + t.system_time for t in p.threads()}
sim = gw.sim("ascii", "01020000", "ascii", tmp / "c.txt", tmp / "r.csv", "--count", "7500", "--connections", "8", "--window", "24", background=True)
sp = psutil.Process(sim.pid); last = None
while sim.poll() is None:
    try: last = sp.cpu_times()
    except Exception: pass
    time.sleep(0.05)
out = sim.stdout.read()
c1 = p.cpu_times(); t1 = time.time(); th1 = {t.id: t.user_time + t.system_time for t in p.threads()}
names = {}
for tid in th1:
    try: names[tid] = open(f"/proc/{gw.proc.pid}/task/{tid}/comm").read().strip()
    except Exception: names[tid] = "?"
r0 = json.loads(sim.stdout.read()) if False else None
r = json.loads(out)
cpu = (c1.user + c1.system) - (c0.user + c0.system)
print(f"payments {r['payments']} rate {r['payments_per_s']}/s  gateway {cpu/r['payments']*1000:.3f} ms/payment  sim {(last.user+last.system)/r['payments']*1000:.3f} ms/payment (incl. startup)  p99 {r['latency_ms']['p99']}")
for tid, v in sorted(th1.items(), key=lambda x: -(x[1]-th0.get(x[0],0)))[:6]:
    print(f"  thread {names[tid]:20s} {(v-th0.get(tid,0))/r['payments']*1000:.3f} ms/payment")
gw.terminate()

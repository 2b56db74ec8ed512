#!/usr/bin/env python3
"""Benchmarks of the spine, each printing one JSON object per line.

    python3 bench/spine.py [backfill|rate|lag|all] [--bin PATH]

- backfill: unthrottled sim with ~100,000 objects into SQLite, end to end
  (engine start to every account caught up): objects/s and the engine's peak RSS.
  BENCH_CONCURRENCY sets the source's `concurrency` (default 50).
- catalogue: the same over every resource of the catalogue (~126,000 objects
  of 105 types, children walked from their parents).
- rate: sim --rate-limit 60, engine rate_limit_per_sec = 50: achieved request
  rate during backfill and 429s served.
- latency: Stripe's live limit and latency (sim --rate-limit 100 --latency-ms
  300, one account, the core resources) with a budget of 100 requests/s: the request rate the
  backfill achieves (creation-time ranges paged concurrently), 429s and
  objects/s; end to end (engine start to caught up, which includes the
  request for the newest event before the backfill and the catch-up after
  it, a round trip each) and over the backfill alone. latency_100k: the same
  over ~100,000 objects (scale 21000), where those fixed round trips weigh less.
- backfill_pg: the same into Postgres (a throwaway schema), then change-log
  read throughput with `changes_after` in pages of 1,000 (bench/changelog_read.rs).
- lag: live mutations at 100/s, poll_interval_ms = 500: event created (sim
  clock) to change committed (engine clock), p50/p99/max in ms.
- lookback: requests to /v1/events per minute while live at poll_interval_ms =
  500 and 20 live changes/s, with lookback_secs = 30 and with 0: what the
  lookback costs.
- reconcile: a reconcile of ~100,000 objects (the core resources) against the
  unthrottled simulator, with the whole budget (1,000 requests/s) its own:
  objects checked per second and requests per 1,000 objects, from its
  `reconcile_complete` line.
- reconcile_lag: the live lag (event created to change committed) while a
  reconcile runs against sim --rate-limit 50 with a budget of 50/s and 20
  live changes/s; 429s served.
- long_polls: 1,000 idle long polls (one per queue, wait_ms = 30000) held
  open on the engine (SQLite) while live traffic flows to another queue
  (each fan-out wakes every waiting poll, which pulls again and waits on):
  the engine's threads and RSS, the most seen over 5 s of sampling.

Run by bench/run.sh, which builds the release binary first.
"""
import argparse
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "sk_test_bench"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.load(r)


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def wait_for(what, check, timeout=600, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(every)
    raise SystemExit(f"timed out waiting for {what}")


PG_URL = os.environ.get("TRIBUTARY_TEST_PG", "postgres://postgres@127.0.0.1:5432/postgres")


class Run:
    def __init__(self, binary, sim_args, source_extra, database=None, api_extra=""):
        self.dir = tempfile.mkdtemp(prefix="tributary-bench-")
        self.sim_port, self.api_port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{self.sim_port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.db = os.path.join(self.dir, "bench.db")
        log = open(os.path.join(self.dir, "sim.log"), "w")
        self.sim = subprocess.Popen([binary, "sim", "--listen", f"127.0.0.1:{self.sim_port}", *sim_args], stdout=log, stderr=log)
        wait_for("sim", lambda: get(f"{self.sim_url}/__sim/stats") is not None)
        config = os.path.join(self.dir, "tributary.toml")
        database = database or f'url = "sqlite://{self.db}"'
        with open(config, "w") as f:
            f.write(f'[database]\n{database}\n[api]\nlisten = "127.0.0.1:{self.api_port}"\n{api_extra}\n'
                    f'[[sources]]\nname = "stripe"\nkind = "stripe"\nbase_url = "{self.sim_url}"\napi_key_env = "BENCH_KEY"\n{source_extra}\n')
        self.config = config
        self.binary = binary

    def start_engine(self, env=None):
        log = open(os.path.join(self.dir, "engine.log"), "w")
        self.started = time.time()
        self.engine = subprocess.Popen([self.binary, "run", "--config", self.config], stdout=log, stderr=log,
                                       env={**os.environ, "BENCH_KEY": KEY, "RUST_LOG": "info", **(env or {})})
        wait_for("engine api", lambda: get(f"{self.api}/health") is not None)

    def sources(self):
        return get(f"{self.api}/v1/sources")["sources"][0]

    def wait_live(self):
        """Seconds from spawning the engine to every account caught up, from
        the engine's own log (polling the API less often keeps the observer
        from competing with the engine)."""
        wait_for("live", lambda: self.sources()["phase"] == "live", every=0.25)
        return max(self.log_stamps(("caught_up",))["caught_up"]) - self.started

    def log_stamps(self, kinds):
        """When the engine logged each line of these kinds (unix seconds)."""
        from datetime import datetime
        stamps = {kind: [] for kind in kinds}
        with open(os.path.join(self.dir, "engine.log")) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("kind") in stamps:
                    stamps[entry["kind"]].append(datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp())
        return stamps

    def proc_status(self, field):
        with open(f"/proc/{self.engine.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return None

    def peak_rss_mb(self):
        return self.proc_status("VmHWM") / 1024

    def close(self):
        for p in (getattr(self, "engine", None), self.sim):
            if p:
                p.kill()
                p.wait()


# the core of a billing mirror: the seven resources earlier releases knew
CORE = 'resources = ["customers", "products", "prices", "subscriptions", "invoices", "charges", "payment_intents"]'


def backfill(binary, database=None, name="backfill_sqlite", catalogue=False):
    """Unthrottled backfill into SQLite (or `database`): the core resources
    at scale 21000 (~100,000 objects), or with `catalogue` every resource of
    the catalogue (children walked from their parents) at a scale that also
    gives ~100,000 objects."""
    scale, resources = ("8000", "") if catalogue else ("21000", CORE)
    run = Run(binary, ["--scale", scale, "--accounts", "3", "--seed", "7"],
              f"rate_limit_per_sec = 1000000\nconcurrency = {os.environ.get('BENCH_CONCURRENCY', 50)}\n{resources}", database)
    try:
        run.start_engine()
        elapsed = run.wait_live()
        objects = sum(run.sources()["objects"].values())
        requests = get(f"{run.sim_url}/__sim/stats")["requests"]
        return {"bench": name, "objects": objects, "object_types": len(run.sources()["objects"]), "requests": requests,
                "seconds": round(elapsed, 2), "objects_per_sec": round(objects / elapsed), "peak_rss_mb": round(run.peak_rss_mb(), 1)}
    finally:
        run.close()


def changelog_read(reader, url, schema=None):
    out = subprocess.run([reader, url] + ([schema] if schema else []), check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def backfill_pg(binary, reader, catalogue=False):
    schema = f"tributary_bench_{os.getpid()}"
    database = f'url = "{PG_URL}"\nschema = "{schema}"'
    try:
        results = [backfill(binary, database, "backfill_catalogue_postgres" if catalogue else "backfill_postgres", catalogue)]
        results[0]["target_objects_per_sec"] = 20000
        results.append(changelog_read(reader, PG_URL, schema))
        return results
    finally:
        subprocess.run(["psql", PG_URL, "-qc", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'], capture_output=True)


def budget_run(binary, name, sim_args, budget, source_extra=""):
    """A backfill against a limited sim with a budget of `budget` requests/s:
    the request rate achieved from engine start to live, 429s, objects/s."""
    run = Run(binary, sim_args, f"rate_limit_per_sec = {budget}\n{source_extra}")
    try:
        before = get(f"{run.sim_url}/__sim/stats")
        run.start_engine()
        elapsed = run.wait_live()
        after = get(f"{run.sim_url}/__sim/stats")
        requests = after["requests"] - before["requests"]
        objects = sum(run.sources()["objects"].values())
        achieved = requests / elapsed
        # the backfill alone, from its start to its end in the engine's log,
        # without the events requests that come before and after it
        stamps = run.log_stamps(("backfill_started", "backfill_complete"))
        backfill_seconds = max(stamps["backfill_complete"]) - min(stamps["backfill_started"])
        backfill_requests = requests - sum(n for route, n in after["by_route"].items() if route.startswith("GET /v1/events"))
        return {"bench": name, "requests": requests, "seconds": round(elapsed, 2),
                "achieved_per_sec": round(achieved, 2), "budget_per_sec": budget, "share_of_budget": round(achieved / budget, 3),
                "backfill_seconds": round(backfill_seconds, 2),
                "backfill_share_of_budget": round(backfill_requests / backfill_seconds / budget, 3),
                "rate_limited_429": after["rate_limited"] - before["rate_limited"],
                "objects": objects, "objects_per_sec": round(objects / elapsed)}
    finally:
        run.close()


def rate(binary):
    return budget_run(binary, "rate_budget", ["--scale", "5000", "--accounts", "3", "--rate-limit", "60"], 50, "concurrency = 50")


def latency(binary, scale=10000, name="latency_budget"):
    sim = ["--scale", str(scale), "--accounts", "0", "--rate-limit", "100", "--latency-ms", "300"]
    return budget_run(binary, name, sim, 100, f"accounts = []\n{CORE}") | {"latency_ms": 300, "target_share": 0.9}


def lag(binary, seconds=30):
    run = Run(binary, ["--scale", "2000", "--accounts", "3"], "poll_interval_ms = 500")
    try:
        run.start_engine()
        run.wait_live()
        live_at_ms = int(time.time() * 1000)
        post(f"{run.sim_url}/__sim/traffic", {"mutations_per_sec": 100})
        time.sleep(seconds)
        post(f"{run.sim_url}/__sim/traffic", {"mutations_per_sec": 0})
        get(f"{run.api}/v1/sources/stripe/wait?timeout_ms=30000")
        return {"bench": "event_lag", **event_lags(run, live_at_ms), "mutations_per_sec": 100,
                "poll_interval_ms": 500, "target_p99_ms": 600}
    finally:
        run.close()


def event_lags(run, since_ms, until_ms=None):
    """Event created (sim clock) to change committed (engine clock) of the
    events created in [since_ms, until_ms]: count, unapplied, p50/p99/max."""
    until_ms = until_ms or 1 << 62
    created = get(f"{run.sim_url}/__sim/event_times")
    db = sqlite3.connect(run.db)
    committed = dict(db.execute(
        "SELECT upstream_event_id, CAST((julianday(committed_at) - 2440587.5) * 86400000 AS INTEGER) "
        "FROM tributary_changes WHERE upstream_event_id IS NOT NULL"))
    window = {e: t for e, t in created.items() if since_ms < t <= until_ms}
    lags = sorted(committed[e] - t for e, t in window.items() if e in committed)
    pct = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]
    return {"events": len(lags), "unapplied": sum(1 for e in window if e not in committed),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": lags[-1]}


def lookback_cost(binary, seconds=30, mutations_per_sec=20):
    """Requests to /v1/events per minute while live, with the lookback
    (`lookback_secs = 30`) and without it, at poll_interval_ms = 500 and live
    traffic."""
    rates = {}
    for lookback in (30, 0):
        run = Run(binary, ["--scale", "1000", "--accounts", "0"],
                  f"accounts = []\n{CORE}\nrate_limit_per_sec = 1000\npoll_interval_ms = 500\nlookback_secs = {lookback}")
        try:
            run.start_engine()
            run.wait_live()
            post(f"{run.sim_url}/__sim/traffic", {"mutations_per_sec": mutations_per_sec})
            before = get(f"{run.sim_url}/__sim/stats")["by_route"].get("GET /v1/events", 0)
            time.sleep(seconds)
            after = get(f"{run.sim_url}/__sim/stats")["by_route"].get("GET /v1/events", 0)
            rates[lookback] = (after - before) * 60 / seconds
        finally:
            run.close()
    return {"bench": "lookback_cost", "poll_interval_ms": 500, "mutations_per_sec": mutations_per_sec, "lookback_secs": 30,
            "events_requests_per_min": round(rates[30], 1), "without_lookback_per_min": round(rates[0], 1),
            "extra_requests_per_min": round(rates[30] - rates[0], 1)}


def reconcile(binary, scale=21000):
    """A reconcile of the core resources (~100,000 objects at scale 21000)
    against the unthrottled simulator, nothing to repair."""
    run = Run(binary, ["--scale", str(scale), "--accounts", "0"],
              f"accounts = []\n{CORE}\nrate_limit_per_sec = 1000\nreconcile_every_secs = 0\nreconcile_budget_share = 1.0",
              api_extra='admin_token_env = "BENCH_ADMIN_TOKEN"')
    try:
        run.start_engine(env={"BENCH_ADMIN_TOKEN": "bench-admin"})
        run.wait_live()
        before = get(f"{run.sim_url}/__sim/stats")["requests"]
        request("POST", f"{run.api}/v1/sources/stripe/reconcile", token="bench-admin")

        def complete():
            with open(os.path.join(run.dir, "engine.log")) as f:
                for line in f:
                    if '"reconcile_complete"' in line:
                        return json.loads(line)
            return None
        wait_for("reconcile_complete", complete, timeout=1200, every=0.5)
        done = complete()
        served = get(f"{run.sim_url}/__sim/stats")["requests"] - before
        seconds = done["duration_ms"] / 1000
        return {"bench": "reconcile", "objects_checked": done["checked"], "seconds": round(seconds, 2),
                "objects_per_sec": round(done["checked"] / seconds), "requests": done["requests"],
                "requests_per_1000_objects": round(done["requests"] * 1000 / done["checked"], 2),
                "upstream_requests_meanwhile": served, "drift": done["missing"] + done["extra"] + done["differed"],
                "peak_rss_mb": round(run.peak_rss_mb())}
    finally:
        run.close()


def reconcile_lag(binary):
    """Live lag while a reconcile runs under Stripe's live limit: sim
    --rate-limit 50, a budget of 50 requests/s (the reconcile takes its
    default fifth), 20 live changes/s: event created to change committed,
    for the events made while the reconcile ran, and the 429s served."""
    run = Run(binary, ["--scale", "2000", "--accounts", "0", "--rate-limit", "50"],
              f"accounts = []\n{CORE}\nrate_limit_per_sec = 50\nreconcile_every_secs = 0",
              api_extra='admin_token_env = "BENCH_ADMIN_TOKEN"')
    try:
        run.start_engine(env={"BENCH_ADMIN_TOKEN": "bench-admin"})
        run.wait_live()
        post(f"{run.sim_url}/__sim/traffic", {"mutations_per_sec": 20})
        time.sleep(2)
        limited = get(f"{run.sim_url}/__sim/stats")["rate_limited"]
        started_ms = int(time.time() * 1000)
        request("POST", f"{run.api}/v1/sources/stripe/reconcile", token="bench-admin")
        wait_for("reconcile_complete", lambda: run.log_stamps(("reconcile_complete",))["reconcile_complete"], timeout=1200, every=0.5)
        ended_ms = int(time.time() * 1000)
        post(f"{run.sim_url}/__sim/traffic", {"mutations_per_sec": 0})
        get(f"{run.api}/v1/sources/stripe/wait?timeout_ms=30000")
        done = [json.loads(l) for l in open(os.path.join(run.dir, "engine.log")) if '"reconcile_complete"' in l][0]
        return {"bench": "reconcile_lag", **event_lags(run, started_ms, ended_ms), "mutations_per_sec": 20,
                "budget_per_sec": 50, "reconcile_seconds": round(done["duration_ms"] / 1000, 1),
                "reconcile_objects": done["checked"], "reconcile_requests": done["requests"],
                "rate_limited_429": get(f"{run.sim_url}/__sim/stats")["rate_limited"] - limited, "target_p99_ms": 1000}
    finally:
        run.close()


def request(method, url, body=None, token=None):
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method=method), timeout=60) as r:
        return json.load(r)


def long_polls(binary, polls=1000):
    """Threads and RSS of the engine while `polls` long polls wait on empty
    queues (each pull waits 30 s; nothing is committed meanwhile)."""
    import concurrent.futures
    admin = "bench-admin"
    run = Run(binary, ["--scale", "10", "--accounts", "0", "--mutations-per-sec", "20"], "accounts = []\npoll_interval_ms = 200",
              api_extra=f'admin_token_env = "BENCH_ADMIN"\napp_rate_limit_per_sec = 1000000\nmax_queues_per_app = {polls}')
    try:
        run.start_engine({"BENCH_ADMIN": admin})
        wait_for("live", lambda: run.sources()["phase"] == "live", every=0.25)
        idle = {"threads": run.proc_status("Threads"), "rss_mb": round(run.proc_status("VmRSS") / 1024, 1)}
        token = request("POST", f"{run.api}/v1/apps", {"name": "bench", "kind": "inhouse", "account": "platform"}, admin)["token"]
        codes = [request("POST", f"{run.api}/v1/queues", {"name": f"q{i}"}, token)["code"] for i in range(polls)]
        for code in codes:
            request("POST", f"{run.api}/v1/queues/{code}/subscriptions", {"event_type": "nothing.*", "account": "platform"}, token)
        # a queue that live changes do reach: its fan-outs wake the idle polls
        busy = request("POST", f"{run.api}/v1/apps", {"name": "busy", "kind": "inhouse", "account": "platform"}, admin)["token"]
        busy_code = request("POST", f"{run.api}/v1/queues", {"name": "busy"}, busy)["code"]
        request("POST", f"{run.api}/v1/queues/{busy_code}/subscriptions", {"event_type": "*", "account": "platform"}, busy)

        def pull(code):
            return request("POST", f"{run.api}/v1/queues/{code}/events/pull", {"wait_ms": 30000}, token)

        def waiting():
            with urllib.request.urlopen(f"{run.api}/metrics", timeout=10) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("tributary_queue_pulls_waiting"):
                        return float(line.split()[-1])
            return 0

        with concurrent.futures.ThreadPoolExecutor(max_workers=polls) as pool:
            futures = [pool.submit(pull, code) for code in codes]
            wait_for("every long poll to wait", lambda: waiting() >= polls, timeout=60, every=0.2)
            threads, rss = [], []
            until = time.time() + 5
            while time.time() < until:
                threads.append(run.proc_status("Threads"))
                rss.append(run.proc_status("VmRSS"))
                time.sleep(0.05)
            held = {"threads": max(threads), "rss_mb": round(max(rss) / 1024, 1)}
            for f in futures:
                f.result()
        customers = int(get(f"{run.api}/v1/sources")["sources"][0]["objects"].get("customer", 0))
        return {"bench": "idle_long_polls", "backend": "sqlite", "polls": polls, "mutations_per_sec": 20, "idle_threads": idle["threads"],
                "idle_rss_mb": idle["rss_mb"], "max_threads": held["threads"], "max_rss_mb": held["rss_mb"],
                "peak_rss_mb": round(run.peak_rss_mb(), 1), "customers_mirrored": customers,
                "target_threads": 64, "target_rss_mb": 120}
    finally:
        run.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("which", nargs="?", default="all", choices=["backfill", "backfill_pg", "catalogue", "catalogue_pg", "rate", "latency", "latency_100k", "lag", "lookback", "reconcile", "reconcile_lag", "long_polls", "all"])
    parser.add_argument("--bin", default=os.path.expanduser("~/.cache/tributary-target/release/tributary"))
    parser.add_argument("--reader", default=os.path.expanduser("~/.cache/tributary-target/release/examples/changelog_read"))
    args = parser.parse_args()
    benches = {
        "backfill": lambda: backfill(args.bin) | {"target_objects_per_sec": 30000, "target_peak_rss_mb": 150},
        "backfill_pg": lambda: backfill_pg(args.bin, args.reader),
        "catalogue": lambda: backfill(args.bin, name="backfill_catalogue_sqlite", catalogue=True)
        | {"target_peak_rss_mb": 150},
        "catalogue_pg": lambda: backfill_pg(args.bin, args.reader, catalogue=True),
        "rate": lambda: rate(args.bin),
        "latency": lambda: latency(args.bin),
        "latency_100k": lambda: latency(args.bin, scale=21000, name="latency_budget_100k"),
        "lag": lambda: lag(args.bin),
        "lookback": lambda: lookback_cost(args.bin),
        "reconcile": lambda: reconcile(args.bin),
        "reconcile_lag": lambda: reconcile_lag(args.bin),
        "long_polls": lambda: long_polls(args.bin),
    }
    for name in (benches if args.which == "all" else [args.which]):
        result = benches[name]()
        for line in result if isinstance(result, list) else [result]:
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    sys.exit(main())

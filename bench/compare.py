"""Trailkeep next to PostgreSQL, SQLite and ClickHouse on the same corpus (issue #12).

Run through `bench/compare`, which installs what is missing and builds Trailkeep. This script:

1. writes one corpus (`trailkeep bench corpus --end T`: the same bytes for the same N, seed, T);
2. chooses the values of the five reference queries from it (seeded) and counts, from the corpus
   itself, how many results each query must give;
3. for each system: starts it on loopback in a temporary directory (as a plain process, no
   service manager), loads the corpus, measures ingest events/s and bytes on disk per event,
   runs the five queries once per value (their results are counted and must equal the corpus's
   counts; a mismatch fails the run), then times K runs of each (p50/p99), and stops it;
4. prints one table with the ratios Trailkeep/peer and writes the figures as JSON.

Every system keeps its default durability: Trailkeep acknowledges after fsync, PostgreSQL commits
with fsync (synchronous_commit on), SQLite in WAL mode with its default synchronous setting,
ClickHouse does not fsync inserted parts (its default).
"""

import argparse
import datetime
import http.client
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse

PEERS = ("postgres", "sqlite", "clickhouse")
WORDS = ("unavailable", "expired", "exceeded", "reconciling")
QUERIES = (
    ("correlation", "one correlationId"),
    ("target", "one target.id, newest 100"),
    ("failures", "one account's failures in 24 h, newest 100"),
    ("word", "full-text word, newest 100"),
    ("counts", "counts by action over 7 days"),
)
PG_BIN = "/usr/lib/postgresql/15/bin"
CLICKHOUSE = "/usr/sbin/clickhouse-server"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rfc3339(unix):
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dir_size(path):
    total = 0
    for base, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(base, f)).st_size
            except FileNotFoundError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# The corpus, as rows every peer stores.

class Row:
    __slots__ = ("id", "us", "account", "region", "action", "outcome", "target", "initiator",
                 "correlation", "code", "text", "line")


def tokens(text):
    """Words as Trailkeep's index splits them: runs of letters and digits, lower-cased."""
    return [w for w in re.split(r"[^0-9a-z]+", text.lower()) if w]


def load_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            ev = json.loads(line)
            r = Row()
            r.id = ev["id"]
            t = datetime.datetime.fromisoformat(ev["eventTime"])
            r.us = (t - EPOCH) // datetime.timedelta(microseconds=1)
            crn = ev["logSourceCRN"].split(":")
            r.account = crn[6][2:] if crn[6].startswith("a/") else crn[6]
            r.region = crn[5]
            r.action = ev["action"]
            r.outcome = ev["outcome"]
            r.target = ev.get("target", {}).get("id", "")
            r.initiator = ev.get("initiator", {}).get("id", "")
            r.correlation = ev.get("correlationId", "")
            reason = ev.get("reason", {})
            r.code = int(reason.get("reasonCode", 0))
            r.text = " ".join(x for x in (ev.get("message"), reason.get("reasonForFailure")) if x)
            r.line = line
            rows.append(r)
    return rows


def choose_params(rows, seed, end, values):
    """The values of the five queries, and the results each must give (from the corpus)."""
    rng = random.Random(seed)
    correlations = sorted({r.correlation for r in rows if r.correlation})
    targets = sorted({r.target for r in rows if r.target})
    failures_from = end - 86_400
    per_account = {}
    for r in rows:
        if r.outcome == "failure" and r.us >= failures_from * 1_000_000:
            per_account[r.account] = per_account.get(r.account, 0) + 1
    account = max(sorted(per_account), key=lambda a: per_account[a])
    p = {
        "from": rfc3339(end - 8 * 86_400),
        "to": rfc3339(end + 3_600),
        "failures_from": rfc3339(failures_from),
        "counts_from": rfc3339(end - 7 * 86_400),
        "correlation_ids": rng.sample(correlations, min(values, len(correlations))),
        "target_ids": rng.sample(targets, min(values, len(targets))),
        "account": account,
        "words": list(WORDS),
    }
    return p


def expected_hits(rows, p):
    """Sum over the values of each query of the results it returns (newest 100 at most)."""
    def us(t):
        return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) * 1_000_000
    lo, hi, f24, d7 = us(p["from"]), us(p["to"]), us(p["failures_from"]), us(p["counts_from"])
    window = [r for r in rows if lo <= r.us < hi]
    by_corr, by_target, by_word = {}, {}, {}
    for r in window:
        by_corr[r.correlation] = by_corr.get(r.correlation, 0) + 1
        by_target[r.target] = by_target.get(r.target, 0) + 1
        for w in set(tokens(r.text) + tokens(r.action)):
            by_word[w] = by_word.get(w, 0) + 1
    return {
        "correlation": sum(min(100, by_corr.get(c, 0)) for c in p["correlation_ids"]),
        "target": sum(min(100, by_target.get(t, 0)) for t in p["target_ids"]),
        "failures": min(100, sum(1 for r in rows if r.account == p["account"]
                                 and r.outcome == "failure" and f24 <= r.us < hi)),
        "word": sum(min(100, by_word.get(w, 0)) for w in p["words"]),
        "counts": sum(1 for r in rows if d7 <= r.us < hi),
    }


def tsv_field(v):
    s = str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# ---------------------------------------------------------------------------------------------
# Timing helpers.

def percentile(samples, p):
    s = sorted(samples)
    if not s:
        return 0.0
    rank = max(1, min(len(s), int(-(-p / 100.0 * len(s) // 1))))
    return s[rank - 1]


def time_queries(run, p, k):
    """For each query: hits (each value once, added up), then p50/p99 of k timed runs."""
    values = {
        "correlation": p["correlation_ids"],
        "target": p["target_ids"],
        "failures": [p["account"]],
        "word": p["words"],
        "counts": [None],
    }
    out = {}
    for key, name in QUERIES:
        vals = values[key]
        hits = sum(run(key, v) for v in vals)
        for i in range(max(1, k // 10)):
            run(key, vals[i % len(vals)])
        lat = []
        for i in range(k):
            t = time.perf_counter()
            run(key, vals[i % len(vals)])
            lat.append((time.perf_counter() - t) * 1e3)
        out[key] = {"name": name, "hits": hits, "p50_ms": percentile(lat, 50),
                    "p99_ms": percentile(lat, 99), "runs": k}
        log(f"  {name:<46} p50 {out[key]['p50_ms']:8.2f} ms  p99 {out[key]['p99_ms']:8.2f} ms  hits {hits}")
    return out


# ---------------------------------------------------------------------------------------------
# Trailkeep: its own load generators over HTTP (4 connections, 1,000 events per request).

def run_trailkeep(args, work, corpus, params_path):
    tk = os.environ["TRAILKEEP_BIN"]
    data = os.path.join(work, "trailkeep-data")
    ingest_json = os.path.join(work, "trailkeep-ingest.json")
    query_json = os.path.join(work, "trailkeep-query.json")
    env = dict(os.environ)
    env.pop("TRAILKEEP_BENCH_URL", None)
    env.pop("TRAILKEEP_KEY", None)
    subprocess.run([tk, "bench", "ingest", "--corpus", corpus, "--data-dir", data,
                    "--json", ingest_json], check=True, cwd=work, env=env, stdout=sys.stderr)
    ingest = json.load(open(ingest_json))
    if not ingest.get("indexed"):
        raise RuntimeError("trailkeep: the index did not catch up after the load")
    subprocess.run([tk, "bench", "query", "--data-dir", data, "--params", params_path,
                    "--iterations", str(args.queries_per_row), "--json", query_json],
                   check=True, cwd=work, env=env, stdout=sys.stderr)
    q = json.load(open(query_json))["queries"]
    queries = {}
    for (key, name), fig in zip(QUERIES, q):
        assert fig["name"] == name, (fig["name"], name)
        queries[key] = fig
    return {
        "ingest": [{"method": "HTTP, 4 connections, 1,000 events/request",
                    "events_per_s": ingest["events_per_s"], "events": ingest["events"]}],
        "bytes_per_event": ingest["bytes_per_event"],
        "queries": queries,
    }


# ---------------------------------------------------------------------------------------------
# PostgreSQL 15: a table with extracted columns and the event as jsonb, btree indexes on
# (account, time), (target id, time) and correlation id, a GIN full-text index.

PG_SCHEMA = """
CREATE TABLE events (
    id text NOT NULL,
    event_time timestamptz NOT NULL,
    account text NOT NULL,
    region text NOT NULL,
    action text NOT NULL,
    outcome text NOT NULL,
    target_id text NOT NULL,
    initiator_id text NOT NULL,
    correlation_id text NOT NULL,
    reason_code integer NOT NULL,
    body text NOT NULL,
    event jsonb NOT NULL
);
CREATE INDEX events_account_time ON events (account, event_time);
CREATE INDEX events_target_time ON events (target_id, event_time);
CREATE INDEX events_correlation ON events (correlation_id);
CREATE INDEX events_time ON events (event_time);
CREATE INDEX events_fts ON events USING gin (to_tsvector('simple', body));
"""
PG_COLUMNS = ("id, event_time, account, region, action, outcome, target_id, initiator_id, "
              "correlation_id, reason_code, body, event")


def utc(us):
    return EPOCH + datetime.timedelta(microseconds=us)


def pg_tuple(r):
    t = utc(r.us)
    return (r.id, t, r.account, r.region, r.action, r.outcome, r.target, r.initiator,
            r.correlation, r.code, r.text + " " + r.action.replace(".", " "), r.line)


def pg_tsv(r):
    t = utc(r.us).isoformat()
    return "\t".join(tsv_field(v) for v in (
        r.id, t, r.account, r.region, r.action, r.outcome, r.target, r.initiator, r.correlation,
        r.code, r.text + " " + r.action.replace(".", " "), r.line)) + "\n"


def run_postgres(args, work, rows, p):
    import psycopg
    root = os.path.join(work, "postgres")
    os.makedirs(root)
    as_user = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    subprocess.run(as_user + [f"{PG_BIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust",
                              "--encoding=UTF8", "--locale=C"], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    server = subprocess.Popen(as_user + [f"{PG_BIN}/postgres", "-D", data, "-p", str(port),
                                         "-c", "listen_addresses=127.0.0.1",
                                         "-c", f"unix_socket_directories={root}"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "postgres.log"), "w"))
    try:
        for _ in range(300):
            if subprocess.run([f"{PG_BIN}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("postgres did not start")
        dsn = f"host=127.0.0.1 port={port} user=postgres"
        with psycopg.connect(dsn + " dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE by_insert")
            c.execute("CREATE DATABASE by_copy")
        result = {"ingest": [], "queries": {}}

        # Batched INSERTs: 1,000 rows per transaction.
        tuples = [pg_tuple(r) for r in rows]
        with psycopg.connect(dsn + " dbname=by_insert") as c:
            c.execute(PG_SCHEMA)
            c.commit()
            sql = f"INSERT INTO events ({PG_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})"
            t = time.perf_counter()
            with c.cursor() as cur:
                for i in range(0, len(tuples), 1000):
                    cur.executemany(sql, tuples[i:i + 1000])
                    c.commit()
            secs = time.perf_counter() - t
        del tuples
        result["ingest"].append({"method": "INSERT, 1,000 rows per transaction",
                                 "events_per_s": len(rows) / secs, "events": len(rows)})
        log(f"  postgres INSERT: {len(rows) / secs:.0f} events/s")

        # COPY, 10,000 rows per transaction.
        chunks = []
        for i in range(0, len(rows), 10_000):
            chunks.append("".join(pg_tsv(r) for r in rows[i:i + 10_000]).encode())
        with psycopg.connect(dsn + " dbname=by_copy") as c:
            c.execute(PG_SCHEMA)
            c.commit()
            before = c.execute("SELECT pg_database_size('by_copy')").fetchone()[0]
            t = time.perf_counter()
            with c.cursor() as cur:
                for chunk in chunks:
                    with cur.copy(f"COPY events ({PG_COLUMNS}) FROM STDIN") as cp:
                        cp.write(chunk)
                    c.commit()
            secs = time.perf_counter() - t
            del chunks
            c.execute("CHECKPOINT")
            after = c.execute("SELECT pg_database_size('by_copy')").fetchone()[0]
        result["ingest"].append({"method": "COPY, 10,000 rows per transaction",
                                 "events_per_s": len(rows) / secs, "events": len(rows)})
        log(f"  postgres COPY: {len(rows) / secs:.0f} events/s")
        result["bytes_per_event"] = (after - before) / len(rows)
        log(f"  postgres bytes on disk: {result['bytes_per_event']:.0f} per event")

        with psycopg.connect(dsn + " dbname=by_copy", autocommit=True) as c:
            c.execute("ANALYZE events")
            lo, hi = p["from"], p["to"]
            sql = {
                "correlation": "SELECT event::text FROM events WHERE correlation_id = %s AND event_time >= %s AND event_time < %s ORDER BY event_time DESC LIMIT 100",
                "target": "SELECT event::text FROM events WHERE target_id = %s AND event_time >= %s AND event_time < %s ORDER BY event_time DESC LIMIT 100",
                "failures": "SELECT event::text FROM events WHERE account = %s AND outcome = 'failure' AND event_time >= %s AND event_time < %s ORDER BY event_time DESC LIMIT 100",
                "word": "SELECT event::text FROM events WHERE to_tsvector('simple', body) @@ plainto_tsquery('simple', %s) AND event_time >= %s AND event_time < %s ORDER BY event_time DESC LIMIT 100",
                "counts": "SELECT action, count(*) FROM events WHERE event_time >= %s AND event_time < %s GROUP BY action",
            }
            cur = c.cursor()

            def run(key, v):
                if key == "counts":
                    cur.execute(sql[key], (p["counts_from"], hi), prepare=True)
                    return sum(n for _, n in cur.fetchall())
                start = p["failures_from"] if key == "failures" else lo
                cur.execute(sql[key], (v, start, hi), prepare=True)
                return len(cur.fetchall())

            result["queries"] = time_queries(run, p, args.queries_per_row)
        return result
    finally:
        server.terminate()
        server.wait(timeout=60)


# ---------------------------------------------------------------------------------------------
# SQLite: WAL, the same columns, the event as text, btree indexes, an FTS5 index of the text.

SQLITE_SCHEMA = """
CREATE TABLE events (
    id TEXT NOT NULL, event_time INTEGER NOT NULL, account TEXT NOT NULL, region TEXT NOT NULL,
    action TEXT NOT NULL, outcome TEXT NOT NULL, target_id TEXT NOT NULL,
    initiator_id TEXT NOT NULL, correlation_id TEXT NOT NULL, reason_code INTEGER NOT NULL,
    body TEXT NOT NULL, event TEXT NOT NULL
);
CREATE INDEX events_account_time ON events (account, event_time);
CREATE INDEX events_target_time ON events (target_id, event_time);
CREATE INDEX events_correlation ON events (correlation_id);
CREATE INDEX events_time ON events (event_time);
CREATE VIRTUAL TABLE events_fts USING fts5(body, content='events', content_rowid='rowid');
"""


def run_sqlite(args, work, rows, p):
    root = os.path.join(work, "sqlite")
    os.makedirs(root)
    path = os.path.join(root, "events.db")
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.executescript(SQLITE_SCHEMA)
    before = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root))
    tuples = [(i + 1, r.id, r.us, r.account, r.region, r.action, r.outcome, r.target, r.initiator,
               r.correlation, r.code, r.text + " " + r.action.replace(".", " "), r.line)
              for i, r in enumerate(rows)]
    t = time.perf_counter()
    for i in range(0, len(tuples), 1000):
        batch = tuples[i:i + 1000]
        c.execute("BEGIN")
        c.executemany("INSERT INTO events (rowid, id, event_time, account, region, action, outcome, "
                      "target_id, initiator_id, correlation_id, reason_code, body, event) "
                      "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", batch)
        c.executemany("INSERT INTO events_fts (rowid, body) VALUES (?, ?)",
                      [(b[0], b[11]) for b in batch])
        c.execute("COMMIT")
    secs = time.perf_counter() - t
    del tuples
    c.execute("ANALYZE")
    c.close()  # checkpoints the WAL into the database file
    after = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root))
    log(f"  sqlite INSERT: {len(rows) / secs:.0f} events/s")
    result = {"ingest": [{"method": "INSERT, 1,000 rows per transaction (in-process)",
                          "events_per_s": len(rows) / secs, "events": len(rows)}],
              "bytes_per_event": (after - before) / len(rows)}
    log(f"  sqlite bytes on disk: {result['bytes_per_event']:.0f} per event")

    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")

    def us(t):
        return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) * 1_000_000
    lo, hi, f24, d7 = us(p["from"]), us(p["to"]), us(p["failures_from"]), us(p["counts_from"])
    sql = {
        "correlation": "SELECT event FROM events WHERE correlation_id = ? AND event_time >= ? AND event_time < ? ORDER BY event_time DESC LIMIT 100",
        "target": "SELECT event FROM events WHERE target_id = ? AND event_time >= ? AND event_time < ? ORDER BY event_time DESC LIMIT 100",
        "failures": "SELECT event FROM events WHERE account = ? AND outcome = 'failure' AND event_time >= ? AND event_time < ? ORDER BY event_time DESC LIMIT 100",
        "word": "SELECT e.event FROM events_fts f JOIN events e ON e.rowid = f.rowid WHERE events_fts MATCH ? AND e.event_time >= ? AND e.event_time < ? ORDER BY e.event_time DESC LIMIT 100",
    }

    def run(key, v):
        if key == "counts":
            got = c.execute("SELECT action, count(*) FROM events WHERE event_time >= ? AND event_time < ? GROUP BY action", (d7, hi)).fetchall()
            return sum(n for _, n in got)
        if key == "word":
            v = '"' + v.replace('"', '""') + '"'
        start = f24 if key == "failures" else lo
        return len(c.execute(sql[key], (v, start, hi)).fetchall())

    result["queries"] = time_queries(run, p, args.queries_per_row)
    c.close()
    return result


# ---------------------------------------------------------------------------------------------
# ClickHouse (Debian's 18.16): MergeTree ordered by (account, time), the event as a String.
# This version has no data-skipping or full-text indexes: other lookups scan (with PREWHERE).

CH_CONFIG = """<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/server.log</log><errorlog>{root}/server.err.log</errorlog><size>100M</size><count>1</count></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>1073741824</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""
CH_USERS = """<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>10000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"""
CH_SCHEMA = """
CREATE TABLE events (
    event_time DateTime, account String, region String, action String, outcome String,
    target_id String, initiator_id String, correlation_id String, reason_code UInt16,
    id String, body String, event String
) ENGINE = MergeTree() PARTITION BY toYYYYMMDD(event_time) ORDER BY (account, event_time)
"""


class ClickHouse:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def query(self, sql, body=None):
        if body is None:
            self.conn.request("POST", "/", body=sql.encode())
        else:
            self.conn.request("POST", "/?query=" + urllib.parse.quote(sql), body=body)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"clickhouse: {resp.status}: {data[:500].decode(errors='replace')}")
        return data


def ch_str(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run_clickhouse(args, work, rows, p):
    root = os.path.join(work, "clickhouse")
    os.makedirs(root)
    http_port, tcp_port = free_port(), free_port()
    with open(os.path.join(root, "config.xml"), "w") as f:
        f.write(CH_CONFIG.format(root=root, http=http_port, tcp=tcp_port))
    with open(os.path.join(root, "users.xml"), "w") as f:
        f.write(CH_USERS)
    server = subprocess.Popen([CLICKHOUSE, f"--config-file={root}/config.xml"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "clickhouse.log"), "w"),
                              cwd=root)
    try:
        ch = None
        for _ in range(600):
            try:
                ch = ClickHouse(http_port)
                ch.query("SELECT 1")
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("clickhouse did not start")
        ch.query(CH_SCHEMA)
        chunks = []
        for i in range(0, len(rows), 10_000):
            chunks.append("".join("\t".join(tsv_field(v) for v in (
                utc(r.us).strftime("%Y-%m-%d %H:%M:%S"), r.account, r.region, r.action, r.outcome, r.target, r.initiator,
                r.correlation, r.code, r.id, r.text + " " + r.action.replace(".", " "), r.line)) + "\n"
                for r in rows[i:i + 10_000]).encode())
        # A fresh connection: ClickHouse closes one left idle while the chunks were prepared
        # (its keep-alive timeout is a few seconds; 1M rows take longer than that).
        ch = ClickHouse(http_port)
        t = time.perf_counter()
        for chunk in chunks:
            ch.query("INSERT INTO events FORMAT TabSeparated", chunk)
        secs = time.perf_counter() - t
        del chunks
        log(f"  clickhouse INSERT: {len(rows) / secs:.0f} events/s")
        size = int(ch.query("SELECT sum(bytes_on_disk) FROM system.parts WHERE table = 'events' AND active"))
        result = {"ingest": [{"method": "HTTP INSERT, 10,000 rows per request",
                              "events_per_s": len(rows) / secs, "events": len(rows)}],
                  "bytes_per_event": size / len(rows)}
        log(f"  clickhouse bytes on disk: {result['bytes_per_event']:.0f} per event")

        def t(s):
            return f"toDateTime({int(datetime.datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp())})"
        lo, hi, f24, d7 = t(p["from"]), t(p["to"]), t(p["failures_from"]), t(p["counts_from"])
        newest = f" AND event_time >= {{lo}} AND event_time < {hi} ORDER BY event_time DESC LIMIT 100 FORMAT TSVRaw"

        def run(key, v):
            if key == "counts":
                out = ch.query(f"SELECT action, count() FROM events WHERE event_time >= {d7} AND event_time < {hi} GROUP BY action FORMAT TSV")
                return sum(int(line.split(b"\t")[1]) for line in out.splitlines() if line)
            if key == "correlation":
                sql = f"SELECT event FROM events PREWHERE correlation_id = {ch_str(v)} WHERE 1" + newest.format(lo=lo)
            elif key == "target":
                sql = f"SELECT event FROM events PREWHERE target_id = {ch_str(v)} WHERE 1" + newest.format(lo=lo)
            elif key == "failures":
                sql = f"SELECT event FROM events WHERE account = {ch_str(v)} AND outcome = 'failure'" + newest.format(lo=f24)
            else:
                sql = f"SELECT event FROM events PREWHERE has(alphaTokens(lower(body)), {ch_str(v)}) WHERE 1" + newest.format(lo=lo)
            return ch.query(sql).count(b"\n")

        result["queries"] = time_queries(run, p, args.queries_per_row)
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------------------------------------
# The table.

def fmt_rate(v):
    return f"{v:,.0f}"


def fmt_ms(v):
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def fmt_ratio(v):
    return f"{v:.2f}x" if v < 10 else f"{v:,.0f}x"


def print_table(results, expected, n, ratio, peers):
    systems = ["trailkeep"] + [s for s in peers if s in results]
    tk = results.get("trailkeep")
    width, label = 26, 58
    print()
    print(f"== bench/compare: {n:,} events (zstd -3 ratio {ratio:.2f}x); ratio = Trailkeep / peer ==")
    print(f"{'':<{label}}" + "".join(f"{s:>{width}}" for s in systems))

    def line(text, cells):
        print(f"{text:<{label}}" + "".join(f"{c:>{width}}" for c in cells))

    methods = max(len(results[s]["ingest"]) for s in systems if s in results)
    for m in range(methods):
        cells = []
        for s in systems:
            rs = results.get(s)
            if rs is None or m >= len(rs["ingest"]):
                cells.append("")
                continue
            v = rs["ingest"][m]["events_per_s"]
            if s == "trailkeep" or tk is None:
                cells.append(fmt_rate(v))
            else:
                cells.append(f"{fmt_rate(v)} ({fmt_ratio(tk['ingest'][0]['events_per_s'] / v)})")
        line("ingest, events/s" if m == 0 else "  (second method)", cells)
    cells = []
    for s in systems:
        v = results[s]["bytes_per_event"]
        cells.append(f"{v:,.0f}" if s == "trailkeep" or tk is None
                     else f"{v:,.0f} ({fmt_ratio(tk['bytes_per_event'] / v)})")
    line("bytes on disk per event", cells)
    for key, name in QUERIES:
        cells = []
        for s in systems:
            q = results[s]["queries"][key]
            text = f"{fmt_ms(q['p50_ms'])} / {fmt_ms(q['p99_ms'])}"
            if s != "trailkeep" and tk is not None and q["p99_ms"] > 0:
                text += f" ({fmt_ratio(tk['queries'][key]['p99_ms'] / q['p99_ms'])})"
            cells.append(text)
        line(f"{name}, p50 / p99 ms", cells)
    for key, name in QUERIES:
        line(f"  hits: {key} (corpus: {expected[key]})",
             [str(results[s]["queries"][key]["hits"]) for s in systems])
    print("ratios: ingest and bytes Trailkeep/peer of the first method; latency of p99")
    for s in systems:
        for m in results[s]["ingest"]:
            print(f"{s}: ingest by {m['method']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="corpus size (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="corpus and query-value seed")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help="comma-separated subset of postgres,sqlite,clickhouse (or none)")
    ap.add_argument("--queries-per-row", type=int, default=200, metavar="K",
                    help="timed runs of each query on each system")
    ap.add_argument("--values", type=int, default=50,
                    help="distinct correlation ids and target ids to query")
    ap.add_argument("--json", metavar="FILE", help="write the figures here as JSON")
    ap.add_argument("--workdir", metavar="DIR", help="where the temporary directory goes (default: TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (corpus, data)")
    args = ap.parse_args()
    peers = [] if args.peers in ("", "none") else [x.strip() for x in args.peers.split(",")]
    for x in peers:
        if x not in PEERS:
            ap.error(f"unknown peer {x!r}")

    work = tempfile.mkdtemp(prefix="trailkeep-compare-", dir=args.workdir)
    os.chmod(work, 0o755)  # postgres (its own user) works in a subdirectory
    failed = False
    try:
        end = int(time.time())
        corpus = os.path.join(work, "corpus.ndjson")
        out = subprocess.run([os.environ["TRAILKEEP_BIN"], "bench", "corpus", "--events", str(args.events),
                              "--seed", str(args.seed), "--end", str(end), "--out", corpus],
                             check=True, stderr=subprocess.PIPE, text=True).stderr
        summary = [l for l in out.splitlines() if l.startswith("corpus:")][-1]
        log(summary)
        ratio = float(re.search(r"ratio ([0-9.]+)x", summary).group(1))
        rows = load_rows(corpus)
        p = choose_params(rows, args.seed, end, args.values)
        expected = expected_hits(rows, p)
        params_path = os.path.join(work, "params.json")
        with open(params_path, "w") as f:
            json.dump(p, f, indent=1)
        log(f"expected hits from the corpus: {expected}")

        results = {}
        runners = {"postgres": run_postgres, "sqlite": run_sqlite, "clickhouse": run_clickhouse}
        log("== trailkeep ==")
        results["trailkeep"] = run_trailkeep(args, work, corpus, params_path)
        for peer in peers:
            log(f"== {peer} ==")
            results[peer] = runners[peer](args, work, rows, p)

        print_table(results, expected, len(rows), ratio, peers)
        mismatches = [f"{s}: {key} gave {r['queries'][key]['hits']} results, the corpus has {expected[key]}"
                      for s, r in results.items() for key, _ in QUERIES
                      if r["queries"][key]["hits"] != expected[key]]
        for m in mismatches:
            print("MISMATCH " + m)
        failed = bool(mismatches)
        doc = {"events": len(rows), "seed": args.seed, "end": rfc3339(end),
               "corpus_bytes": os.path.getsize(corpus), "zstd_ratio": ratio,
               "queries_per_row": args.queries_per_row, "params": p, "expected_hits": expected,
               "results": results, "mismatches": mismatches}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=1)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

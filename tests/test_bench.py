"""What bench/peer.py and bench/memory.py parse and compute: wrk's figures, /proc sizes and
children, the store's counts, the RSS trend and verdict, the chunk scripts, webhook's hooks
file and the rule check. No timing is asserted."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bench import memory, peer
from bench.ingest import parse_wrk
from engine.rules.dryrun import dry_run
from engine.rules.loader import load

from .conftest import ROOT

STATUS = """\
Name:\tpython3
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
VmPeak:\t  412340 kB
VmSize:\t  401232 kB
VmHWM:\t   70212 kB
VmRSS:\t   68548 kB
RssAnon:\t   40000 kB
Threads:\t5
voluntary_ctxt_switches:\t120
"""

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:40000/hooks/bench
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   10.02ms  80.00ms   70.00%
  4000 requests in 2.00s, 600.00KB read
Requests/sec:   2000.00
RESULT requests=4000 duration_us=2000000 p50_us=27290 p99_us=70981 errors=3 non2xx=5
"""


# --- wrk -------------------------------------------------------------------------------

def test_parse_wrk_reads_the_result_line() -> None:
    figures = parse_wrk(WRK_OUTPUT)
    assert figures["rps"] == pytest.approx(2000.0)
    assert figures["p50_ms"] == pytest.approx(27.29)
    assert figures["p99_ms"] == pytest.approx(70.981)
    assert (figures["requests"], figures["errors"], figures["non2xx"]) == (4000, 3, 5)


def test_parse_wrk_without_a_result_line_fails() -> None:
    with pytest.raises(RuntimeError, match="no RESULT line"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


# --- /proc -----------------------------------------------------------------------------

def test_parse_status_reads_sizes_in_kib() -> None:
    sizes = memory.parse_status(STATUS)
    assert sizes["VmRSS"] == 68548
    assert sizes["VmHWM"] == 70212
    assert sizes["RssAnon"] == 40000
    assert "Threads" not in sizes and "Pid" not in sizes


def test_parse_children() -> None:
    assert memory.parse_children("12 345 \n") == [12, 345]
    assert memory.parse_children("") == []


def fake_proc(root: Path, pid: int, rss_kib: int, children: dict[str, str] | None = None) -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "status").write_text(f"Name:\tx\nVmHWM:\t{rss_kib + 10} kB\nVmRSS:\t{rss_kib} kB\n")
    for tid, text in (children or {str(pid): ""}).items():
        (folder / "task" / tid).mkdir(parents=True)
        (folder / "task" / tid / "children").write_text(text)


def test_rss_adds_every_descendant(tmp_path: Path) -> None:
    fake_proc(tmp_path, 100, 1000, {"100": "200 ", "101": "300 "})  # children of two threads
    fake_proc(tmp_path, 200, 50, {"200": "400 "})
    fake_proc(tmp_path, 300, 7)
    fake_proc(tmp_path, 400, 3)
    assert sorted(memory.descendants(100, tmp_path)) == [200, 300, 400]
    sizes = memory.rss(100, tmp_path)
    assert sizes == {"rss_kib": 1000, "hwm_kib": 1010, "tree_rss_kib": 1060, "children": 3}


def test_rss_of_a_lone_process(tmp_path: Path) -> None:
    fake_proc(tmp_path, 100, 2048)
    assert memory.rss(100, tmp_path) == {"rss_kib": 2048, "hwm_kib": 2058, "tree_rss_kib": 2048, "children": 0}


def test_cpu_ticks_adds_user_system_and_children_time() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    stat = "4242 (we(bh) ook) S 1 4242 4242 0 -1 4194560 100 0 0 0 11 22 33 44 20 0 5 0 100 0 0\n"
    assert peer.cpu_ticks(stat) == 11 + 22 + 33 + 44


# --- the store -------------------------------------------------------------------------

def make_store(path: Path, events: list[str], runs: list[str]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL)")
    conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    conn.executemany("INSERT INTO events (status) VALUES (?)", [(s,) for s in events])
    conn.executemany("INSERT INTO runs (status) VALUES (?)", [(s,) for s in runs])
    conn.commit()
    conn.close()


def test_store_counts(tmp_path: Path) -> None:
    db = tmp_path / "hookwise.db"
    make_store(db, ["matched", "matched", "pending", "matched"], ["succeeded", "active", "active", "dead", "succeeded"])
    assert memory.store_counts(db) == {"events": 4, "matched": 3, "runs": 5, "finished": 3}
    assert memory.stored(db) == 4


def test_stored_before_the_store_exists(tmp_path: Path) -> None:
    assert memory.stored(tmp_path / "missing.db") == 0
    sqlite3.connect(tmp_path / "empty.db").close()
    assert memory.stored(tmp_path / "empty.db") == 0


# --- trend and verdict -----------------------------------------------------------------

def test_slope() -> None:
    assert memory.slope([(0, 1.0), (10, 6.0), (20, 11.0)]) == pytest.approx(0.5)
    assert memory.slope([(0, 3.0), (10, 3.0)]) == pytest.approx(0.0)
    assert memory.slope([(5, 1.0), (5, 2.0)]) is None
    assert memory.slope([]) is None


def samples(points: list[tuple[int, float]]) -> list[dict[str, float]]:
    return [{"events": e, "rss_kib": mib * 1024} for e, mib in points]


def test_trend_ignores_the_first_half() -> None:
    # Warm-up growth in the first half, flat afterwards.
    flat = samples([(10_000, 60), (20_000, 70), (40_000, 80), (50_000, 80), (75_000, 80), (100_000, 80)])
    assert memory.trend(flat) == pytest.approx(0.0)


def test_trend_in_mib_per_10k_events() -> None:
    # 2 MiB more per 10,000 events throughout.
    growing = samples([(n, 60 + 2 * n / 10_000) for n in range(10_000, 100_001, 10_000)])
    assert memory.trend(growing) == pytest.approx(2.0)
    assert memory.trend(samples([(1000, 60)])) is None
    assert memory.trend([]) is None


def test_verdict() -> None:
    assert memory.verdict(80.0, 100_000, 0.1) == {
        "projected_mib": 80.0, "under_target": True, "flat": True, "ok": True, "conclusive": True
    }
    assert memory.verdict(80.0, 99_999, 0.1)["conclusive"] is False
    growing = memory.verdict(80.0, 100_000, 1.5)
    assert growing["under_target"] and not growing["flat"] and not growing["ok"]
    assert not memory.verdict(201.0, 100_000, 0.0)["ok"]
    # Fewer events: projected to 100,000 with the trend (a falling trend projects nothing).
    assert memory.verdict(70.0, 20_000, 0.5)["projected_mib"] == pytest.approx(74.0)
    assert memory.verdict(190.0, 20_000, 2.0)["under_target"] is False
    assert memory.verdict(70.0, 20_000, -3.0)["projected_mib"] == pytest.approx(70.0)
    assert memory.verdict(70.0, 20_000, None)["flat"] is False


# --- what memory.py posts and configures --------------------------------------------

def test_chunk_tags_keep_the_body_length() -> None:
    post = (ROOT / "bench" / "post.lua").read_text()
    assert 'string.rep("x", 760)' in post  # the padding the tag overwrites
    tags = {memory.chunk_tag(i) for i in range(12)}
    assert len(tags) == 12
    assert all(len(t) == len(memory.PAD) for t in tags)
    with pytest.raises(ValueError):
        memory.chunk_tag(10**8)
    script = memory.chunk_script(ROOT / "bench" / "post.lua", 3)
    assert f'dofile("{ROOT / "bench" / "post.lua"}")' in script
    assert '("xxxxxxxx", "c0000003", 1)' in script


@pytest.mark.parametrize("action", ["log", "http"])
def test_the_project_matches_every_event_with_one_step(tmp_path: Path, action: str) -> None:
    config = memory.write_project(tmp_path, action, 4321 if action == "http" else None)
    body = {"event": "job-state-changed-v2", "job_id": 7, "state": "processing", "note": "c0000001" + "x" * 752}
    result = dry_run(load(config), body, "bench", {"Content-Type": "application/json"})
    assert [r["matched"] for r in result["explain"]] == [True]
    (step,) = result["actions"]
    assert step["action"] == action
    if action == "log":
        assert step["params"] == {"message": "event 7 is processing", "level": "debug"}
    else:
        assert step["params"]["url"] == "http://127.0.0.1:4321/hooks/sink"
        assert step["params"]["json"] == {"job": 7, "state": "processing"}
        assert load(config).config.settings.http.allow_hosts == ["127.0.0.1:4321"]
    other = dry_run(load(config), {"anything": 1}, "bench", {})
    assert [r["matched"] for r in other["explain"]] == [True]


def test_report_prints_the_samples_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"label": "start", "events": 0, "matched": 0, "runs": 0, "finished": 0,
             "rss_kib": 60 * 1024, "hwm_kib": 60 * 1024}]
    rows += [{"label": f"chunk {i}", "events": i * 10_000, "matched": i * 10_000, "runs": i * 10_000,
              "finished": i * 10_000, "rss_kib": 70 * 1024, "hwm_kib": 71 * 1024} for i in range(1, 11)]
    memory.report({
        "events_target": 100_000, "action": "log", "connections": 64, "time_limit_s": 120.0,
        "posted": {"requests": 99_990, "non2xx": 0, "errors": 0},
        "stored": 100_000, "timed_out": False, "posting_s": 50.0, "catch_up_s": 0.4, "caught_up": True,
        "loadavg_before": 0.5,
        "acknowledged_all_stored": True, "children": 0, "tree_rss_mib": 70.0,
        "rss_mib": 70.0, "hwm_mib": 71.0, "start_rss_mib": 60.0, "trend_mib_per_10k": 0.0,
        "verdict": memory.verdict(70.0, 100_000, 0.0), "samples": rows,
    })
    out = capsys.readouterr().out
    assert "RSS after 100,000 events: 70.0 MiB (at start 60.0, peak 71.0; no child processes)" in out
    assert "FEWER" not in out
    assert "+0.00 MiB per 10,000 events" in out
    assert "not growing: met: at 100,000 70.0 MiB (under 200), flat" in out
    assert out.count("chunk ") == 10


# --- webhook ---------------------------------------------------------------------------

def test_hooks_file_checks_two_payload_fields() -> None:
    for variant in peer.VARIANTS:
        (hook,) = peer.hooks_file(variant)
        assert hook["id"] == "bench"
        assert hook["trigger-rule-mismatch-http-response-code"] == peer.MISMATCH_STATUS
        rules = hook["trigger-rule"]["and"]
        matches = [r["match"] for r in rules]
        assert {(m["parameter"]["source"], m["parameter"]["name"], m["type"], m["value"]) for m in matches} == {
            ("payload", "event", "value", "job-state-changed-v2"), ("payload", "state", "value", "processing")}
        json.dumps(hook)
    assert peer.hooks_file("no-command")[0]["execute-command"] == peer.NO_COMMAND
    assert not Path(peer.NO_COMMAND).exists()
    assert peer.hooks_file("true-async")[0]["execute-command"] == "/bin/true"
    assert "include-command-output-in-response" not in peer.hooks_file("true-async")[0]
    assert peer.hooks_file("true-sync")[0]["include-command-output-in-response"] is True


def webhook_like(request: Request) -> Response:
    body = json.loads(request.data)
    if body.get("event") == "job-state-changed-v2" and body.get("state") == "processing":
        return Response("ok", 200)
    return Response("Hook rules were not satisfied.", peer.MISMATCH_STATUS)


def test_check_rule_accepts_a_server_that_evaluates_the_rule(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hooks/bench", method="POST").respond_with_handler(webhook_like)
    peer.check_rule(httpserver.port)
    assert len(httpserver.log) == 2


def test_check_rule_refuses_a_server_that_answers_200_to_everything(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hooks/bench", method="POST").respond_with_data("ok", 200)
    with pytest.raises(RuntimeError, match="rule refuses"):
        peer.check_rule(httpserver.port)


def test_check_rule_refuses_a_server_that_refuses_the_matching_body(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/hooks/bench", method="POST").respond_with_data("no", 500)
    with pytest.raises(RuntimeError, match="answered 500 to the matching body"):
        peer.check_rule(httpserver.port)


def test_targets_judge_a_run_against_spec_12() -> None:
    from bench.__main__ import targets

    results = {
        "ingest": {"64": {"rps_ratio": 0.53, "p99_ratio": 2.6}},
        "end_to_end": {"max": {"events_per_s": 2315.0}, "half_rate": {"p99_ms": 50.7}},
        "matching": [{"rules": 10, "us_per_event": 1.5}, {"rules": 10000, "us_per_event": 17.5}],
        "memory": {"rss_mib": 64.8, "stored": 100_159, "trend_mib_per_10k": 0.2},
    }
    assert [(figure, met) for _, figure, met in targets(results)] == [
        ("0.53", False), ("2.60x", True), ("2315/s", True), ("50.7 ms", True), ("17.5 us", True),
        ("64.8 MiB at 100,159", True),
    ]
    results["memory"] = {"rss_mib": 62.9, "stored": 10_208, "trend_mib_per_10k": 2.1}  # a quick run
    assert targets(results)[-1][2] is None
    results["backtest"] = {"match_events_per_s": 19_000}
    assert ("backtest >= 20,000 events/s at 1,000 rules", "19,000/s", False) in targets(results)


def test_verdict_text() -> None:
    assert memory.verdict_text(memory.verdict(80.0, 100_000, 0.1)) == "met: at 100,000 80.0 MiB (under 200), flat"
    growing = memory.verdict(80.0, 100_000, 1.5)
    assert memory.verdict_text(growing) == "NOT met: at 100,000 80.0 MiB (under 200), growing"
    assert memory.verdict_text(memory.verdict(250.0, 100_000, 0.0)) == "NOT met: at 100,000 250.0 MiB (OVER 200), flat"
    assert memory.verdict_text(memory.verdict(70.0, 20_000, 1.0)) == (
        "not decided at this count: projected at 100,000 78.0 MiB (under 200), flat so far; a full run decides")


def test_peer_report_puts_hookwise_beside_the_variants(capsys: pytest.CaptureFixture[str]) -> None:
    variants = {
        "no-command": {"rps": 20000.0, "p50_ms": 2.0, "p99_ms": 9.0, "non2xx": 0, "errors": 0},
        "true-async": {"rps": 1300.0, "p50_ms": 35.0, "p99_ms": 400.0, "non2xx": 4, "errors": 0, "drain_s": 0.1},
        "true-sync": {"rps": 1250.0, "p50_ms": 38.0, "p99_ms": 180.0, "non2xx": 0, "errors": 0},
    }
    peer.report({"peer": "webhook version 2.8.0", "connections": 64, "seconds": 2.0, "rounds": 3, "loadavg_before": 0.1,
                 "variants": variants},
                {"rps": 2100.0, "p50_ms": 27.0, "p99_ms": 70.0})
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[-3:] == ["20000", "2.00", "9.00"] and "rule only" in line for line in lines)
    assert any(line.split()[-3:] == ["2100", "27.00", "70.00"] and "hookwise" in line for line in lines)
    assert any("true-async: 4 answers were not 2xx" in line for line in lines)


@pytest.mark.skipif(
    shutil.which("webhook") is None and not os.environ.get("CI"), reason="webhook (Debian package) is not installed"
)
def test_the_hooks_files_work_with_the_real_webhook(tmp_path: Path) -> None:
    for variant in peer.VARIANTS:
        hooks = tmp_path / f"{variant}.json"
        hooks.write_text(json.dumps(peer.hooks_file(variant)))
        port = peer.free_port()
        proc = peer.start_webhook(shutil.which("webhook") or "webhook", port, hooks)
        try:
            peer.check_rule(port)
        finally:
            peer.stop(proc)


def test_remote_targets_judge_the_100ms_figures() -> None:
    from bench.__main__ import targets

    results = {
        "ingest": {"64": {"rps_ratio": 0.9, "p99_ratio": 2.0}},
        "end_to_end": {"max": {"events_per_s": 2315.0}, "half_rate": {"p99_ms": 50.7}},
        "matching": [{"rules": 10000, "us_per_event": 17.5}],
        "memory": {"rss_mib": 64.8, "stored": 100_159, "trend_mib_per_10k": 0.2},
        "remote": {
            "hookwise": {"events_per_s": 1100.0, "lost": 0, "answered_2xx": 3000, "delivered": 3000, "events": 3000},
            "ratio": 5.5,
        },
    }
    rows = {target: (figure, met) for target, figure, met in targets(results)}
    assert rows["100 ms sink, defaults: >= 1,000 events/s"] == ("1100/s", True)
    assert rows["100 ms sink: >= 6x webhook + curl"] == ("5.5x", False)
    assert rows["100 ms sink: none lost"] == ("0 of 3000", True)


@pytest.mark.parametrize("threads", [None, 128])
def test_the_remote_projects_load_and_post_each_event_to_the_sink(tmp_path: Path, threads: int | None) -> None:
    from bench import remote

    config = remote.workers_config(threads) if threads else remote.CONFIG
    loaded = load(remote.write_project(tmp_path, 4321, config))
    body = {"event": "job-state-changed-v2", "job_id": 7, "state": "processing"}
    result = dry_run(loaded, body, "bench", {"Content-Type": "application/json"})
    (step,) = result["actions"]
    assert (step["action"], step["params"]["url"], step["params"]["json"]) == (
        "http", "http://127.0.0.1:4321/sink", body
    )
    settings = loaded.config.settings
    assert settings.http.hosts == {} and settings.http.concurrency == 128  # the defaults: no host of its own
    assert settings.workers.concurrency == (threads or 256)


@pytest.mark.skipif((shutil.which("webhook") is None or shutil.which("curl") is None) and not os.environ.get("CI"),
                    reason="webhook or curl (Debian packages) is not installed")
def test_the_curl_hook_posts_each_payload_to_the_sink(tmp_path: Path) -> None:
    from bench import remote

    from .support import Sink, post

    sink = Sink()
    hooks = tmp_path / "hooks.json"
    hooks.write_text(json.dumps(remote.peer_hooks(sink.port, wait=True)))
    port = peer.free_port()
    proc = peer.start_webhook(shutil.which("webhook") or "webhook", port, hooks)
    try:
        status, _ = post(f"http://127.0.0.1:{port}/hooks/bench", json.dumps({"job_id": 7, "state": "processing"}))
        (hit,) = sink.wait_for(1, timeout=10)
    finally:
        peer.stop(proc)
        sink.close()
    assert status == 200
    assert (hit.method, hit.path, hit.json()) == ("POST", "/sink", {"job_id": 7, "state": "processing"})


# --- the web UI's pages ----------------------------------------------------------------

def test_ui_summary_is_the_median_and_the_worst() -> None:
    from bench.ui import summarize

    assert summarize([3.0, 1.0, 2.0, 10.0]) == {"median_ms": 2.5, "max_ms": 10.0}


def test_ui_seed_fills_the_store_it_describes(tmp_path: Path) -> None:
    from bench.ui import pages, seed

    now = time.time()  # the store claims events due by its own clock
    links = seed(tmp_path, 3000, now=now)
    with sqlite3.connect(tmp_path / "hookwise.db") as conn:
        assert conn.execute("SELECT status, COUNT(*) FROM events GROUP BY status").fetchall() == [("matched", 3000)]
        assert conn.execute("SELECT COUNT(*) FROM events WHERE received_at >= ?", (now - 3600,)).fetchone() == (300,)
        assert dict(conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall()) == {
            "dead": 200, "succeeded": 1800
        }
        assert conn.execute("SELECT COUNT(*) FROM queue_items WHERE status = 'waiting'").fetchone() == (200,)
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (links["dead_run"],)).fetchone() == ("dead",)
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (links["run"],)).fetchone() == ("succeeded",)
    assert f"/ui/runs/{links['dead_run']}" in pages(links) and f"/ui/events/{links['event']}" in pages(links)

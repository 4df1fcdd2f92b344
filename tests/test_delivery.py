"""Delivery control (engine/run/delivery.py): concurrency, rate and the circuit breaker per
destination host, and their state as shown, with an injected clock; then in the worker,
against real sinks on loopback (where the bounds checked are the ones SPEC 6 promises)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from engine.errors import Defer
from engine.rules.config import Http, Settings
from engine.rules.loader import Current, load
from engine.run.delivery import Delivery, Slot
from engine.run.worker import Worker
from engine.store import Incoming, Store, open_store

from .support import Hit, Sink


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def delivery(clock: Clock, **http: Any) -> Delivery:
    return Delivery(Http.model_validate(http), clock=clock, rng=random.Random(7))


def deferred(d: Delivery, host: str, key: str) -> Defer:
    with pytest.raises(Defer) as caught:
        d.admit(host, key)
    return caught.value


# -- concurrency -------------------------------------------------------------------------------


def test_at_most_concurrency_calls_are_in_flight_per_host() -> None:
    clock = Clock()
    d = delivery(clock, hosts={"crm.example.com": {"concurrency": 2}})
    first, second = d.admit("crm.example.com", "a"), d.admit("CRM.example.com", "b")
    wait = deferred(d, "crm.example.com", "c")
    assert "waiting for its concurrency" in str(wait) and wait.after > 0
    d.admit("other.example.com", "x")  # another host has its own slots
    d.done(first, True)
    d.admit("crm.example.com", "c")
    d.done(second, True)


def test_steps_waiting_for_a_slot_are_spread_out() -> None:
    clock = Clock()
    d = delivery(clock, concurrency=1)
    d.admit("h", "a")
    waits = [deferred(d, "h", f"k{i}").after for i in range(5)]
    assert waits == sorted(waits) and len(set(waits)) == 5  # one after the other, not all at once


def test_a_call_refused_before_sending_gives_its_slot_back_and_teaches_nothing() -> None:
    clock = Clock()
    d = delivery(clock, concurrency=1, breaker={"failures": 1, "cooldown": "10s"})
    d.done(d.admit("h", "a"), None)
    d.done(d.admit("h", "b"), None)
    (host,) = d.hosts()
    assert (host["in_flight"], host["breaker"], host["failed"]) == (0, "closed", 0)


# -- rate ------------------------------------------------------------------------------------------


def test_a_rate_spaces_call_starts_and_reserves_the_next_free_start() -> None:
    clock = Clock()
    d = delivery(clock, hosts={"h": {"rate": "10/s"}})
    d.done(d.admit("h", "a"), True)
    later = deferred(d, "h", "b")
    assert later.after == pytest.approx(0.1)
    assert deferred(d, "h", "c").after == pytest.approx(0.2)  # queued behind b
    clock.now += 0.1
    d.done(d.admit("h", "b"), True)  # b takes its reservation
    assert deferred(d, "h", "c").after == pytest.approx(0.1)  # c's is still ahead
    clock.now += 0.1
    d.admit("h", "c")


def test_a_rate_holds_over_time_with_steps_coming_back_when_told() -> None:
    clock = Clock()
    d = delivery(clock, hosts={"h": {"rate": "20/s", "concurrency": 100}})
    due = {f"k{i}": clock.now for i in range(300)}  # 300 steps due at once
    started: list[float] = []
    while due and clock.now < 1005.0:
        clock.now = min(due.values())
        for key in [k for k, at in due.items() if at <= clock.now]:
            try:
                d.done(d.admit("h", key), True)
            except Defer as wait:
                due[key] = clock.now + wait.after
                continue
            started.append(clock.now)
            del due[key]
    in_five_seconds = [t for t in started if t < 1005.0]
    assert 90 <= len(in_five_seconds) <= 101


@pytest.mark.parametrize(
    ("text", "per_second"), [("50/s", 50.0), ("600/m", 10.0), ("1000/h", 1000 / 3600), ("2.5/s", 2.5), (4, 4.0)]
)
def test_rates_are_read_as_calls_per_period(text: Any, per_second: float) -> None:
    assert Http.model_validate({"rate": text}).rate == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["50", "50/x", "/s", "0/s", "-1/s", "fast", 0])
def test_a_bad_rate_is_a_config_error(text: Any) -> None:
    with pytest.raises(ValidationError, match="rate"):
        Http.model_validate({"rate": text})


@pytest.mark.parametrize(
    "host", ["https://crm.example.com", "crm.example.com:443", "crm.example.com/x", "user@crm", ""]
)
def test_hosts_are_host_names(host: str) -> None:
    with pytest.raises(ValidationError, match="is not a host name"):
        Http.model_validate({"hosts": {host: {"concurrency": 1}}})


def test_unknown_keys_in_a_host_are_errors() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Http.model_validate({"hosts": {"crm.example.com": {"concurency": 1}}})


def test_the_defaults_keep_100ms_targets_busy() -> None:
    settings = Settings()
    assert (settings.workers.concurrency, settings.http.concurrency) == (256, 128)
    assert (settings.http.breaker.failures, settings.http.breaker.cooldown, settings.http.rate) == (10, 30.0, None)


# -- the breaker -----------------------------------------------------------------------------------


def fail_times(d: Delivery, host: str, count: int) -> None:
    for n in range(count):
        d.done(d.admit(host, f"f{n}"), False)


def test_consecutive_failures_open_the_breaker_until_the_cooldown_and_a_probe() -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 10, "cooldown": "30s"})
    fail_times(d, "h", 9)
    d.done(d.admit("h", "ok"), True)  # a success in between starts the count again
    fail_times(d, "h", 9)
    d.admit("h", "still-closed")
    d.done(Slot("h", clock.now), False)
    assert d.hosts()[0]["breaker"] == "open"
    wait = deferred(d, "h", "a")
    assert "waiting for its breaker" in str(wait) and 30.0 <= wait.after <= 30.0 + 7.5
    clock.now += 29.0
    deferred(d, "h", "a")
    clock.now += 1.5
    probe = d.admit("h", "a")  # the cooldown has passed: one probe
    assert probe.probe and d.hosts()[0]["breaker"] == "half-open"
    deferred(d, "h", "b")  # the others wait for the probe
    d.done(probe, True)
    assert d.hosts()[0]["breaker"] == "closed"
    d.admit("h", "b")


def test_a_failed_probe_opens_the_breaker_for_another_cooldown() -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 2, "cooldown": "5s"})
    fail_times(d, "h", 2)
    clock.now += 5.0
    probe = d.admit("h", "a")
    d.done(probe, False)
    (host,) = d.hosts()
    assert (host["breaker"], host["retry_in_s"]) == ("open", 5.0)
    assert deferred(d, "h", "a").after >= 5.0


def test_a_probe_refused_before_sending_lets_another_probe_go() -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 1, "cooldown": "1s"})
    fail_times(d, "h", 1)
    clock.now += 1.0
    d.done(d.admit("h", "a"), None)
    assert d.admit("h", "b").probe


def test_failures_zero_means_no_breaker() -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 0})
    fail_times(d, "h", 50)
    d.admit("h", "a")
    assert d.hosts()[0]["breaker"] == "closed"


def test_a_host_of_its_own_breaker_overrides_the_default() -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 100}, hosts={"flaky": {"breaker": {"failures": 1, "cooldown": "1m"}}})
    fail_times(d, "flaky", 1)
    fail_times(d, "steady", 1)
    states = {h["host"]: h["breaker"] for h in d.hosts()}
    assert states == {"flaky": "open", "steady": "closed"}


def test_the_breaker_logs_when_it_opens_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    d = delivery(clock, breaker={"failures": 2, "cooldown": "1s"})
    with caplog.at_level("INFO", logger="hookwise.delivery"):
        fail_times(d, "crm.example.com", 2)
        clock.now += 1.0
        d.done(d.admit("crm.example.com", "p"), True)
    messages = [r.getMessage() for r in caplog.records]
    assert any("crm.example.com: 2 calls failed in a row: the breaker is open" in m for m in messages)
    assert any("the probe call succeeded: the breaker is closed" in m for m in messages)


def test_a_slot_freed_is_announced_and_room_says_so() -> None:
    clock = Clock()
    d = delivery(clock, concurrency=1)
    freed: list[str] = []
    d.listen(freed.append)
    slot = d.admit("h", "a")
    assert not d.room("h") and d.room("other")
    wait = deferred(d, "h", "b")
    assert wait.host == "h"  # it waits for a slot, and may be started as soon as one frees
    d.done(slot, True)
    assert freed == ["h"] and d.room("h")


def test_rate_and_breaker_waits_are_waits_for_a_time_not_a_slot() -> None:
    clock = Clock()
    d = delivery(clock, rate="1/s", breaker={"failures": 1})
    d.done(d.admit("h", "a"), True)
    assert deferred(d, "h", "b").host is None
    d.done(d.admit("g", "a"), False)
    assert deferred(d, "g", "b").host is None


# -- what is shown, and a reload --------------------------------------------------------------------


def test_hosts_show_limits_and_state() -> None:
    clock = Clock()
    d = delivery(clock, concurrency=3, hosts={"crm": {"rate": "600/m"}})
    d.admit("crm", "a")
    (crm,) = d.hosts()
    assert {k: crm[k] for k in ("host", "concurrency", "rate_per_s", "in_flight", "breaker", "calls")} == {
        "host": "crm",
        "concurrency": 3,
        "rate_per_s": 10.0,
        "in_flight": 1,
        "breaker": "closed",
        "calls": 1,
    }


def test_a_reload_changes_limits_and_keeps_state() -> None:
    clock = Clock()
    d = delivery(clock, concurrency=1)
    d.admit("h", "a")
    deferred(d, "h", "b")
    d.configure(Http.model_validate({"concurrency": 2}))
    d.admit("h", "b")
    assert d.hosts()[0]["in_flight"] == 2


# -- in the worker, against real sinks on loopback ---------------------------------------------------


class Setup:
    """A worker on a SQLite store with ``config`` (YAML, its rules inline below it)."""

    def __init__(self, root: Path, config: str, rules: str, concurrency: int) -> None:
        (root / "rules.yaml").write_text(rules)
        (root / "config.yaml").write_text(
            f"store: sqlite:///store.db\nrules: [rules.yaml]\nsources:\n  s: {{token: abcd1234}}\n{config}"
        )
        self.current = Current(load(root / "config.yaml", {}))
        self.store: Store = open_store(self.current().config.store_url())
        self.worker = Worker(self.store, self.current, concurrency=concurrency, poll=0.02)
        self.worker.start()

    def put(self, type_: str, count: int) -> list[str]:
        stored = self.store.put_events(
            [Incoming("s", type_, json.dumps({"n": n}), {}, {}, time.time()) for n in range(count)]
        )
        self.worker.wake()
        return [s.event_id for s in stored]

    def finished(self, events: list[str], timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            runs = [r for e in events for r in self.store.runs_of_event(e)]
            if len(runs) == len(events) and all(r["status"] != "active" for r in runs):
                return runs
            time.sleep(0.02)
        raise AssertionError("the runs did not finish")

    def close(self) -> None:
        self.worker.stop(5)
        self.store.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    made: list[Setup] = []

    def make(config: str, rules: str, concurrency: int = 16) -> Setup:
        made.append(Setup(tmp_path, config, rules, concurrency))
        return made[-1]

    yield make
    for s in made:
        s.close()


def post_rule(name: str, event: str, url: str, retry: str = "{attempts: 3, backoff: 10ms}") -> str:
    return f"""
  - name: {name}
    event: {event}
    actions:
      - http: {{method: POST, url: "{url}", json: {{n: "{{{{ event.n }}}}"}}}}
        retry: {retry}
"""


class Gauge:
    """Requests in flight at a sink, and the most seen at once."""

    def __init__(self, pause: float = 0.0, status: Callable[[int], int] = lambda n: 200) -> None:
        self.pause, self.status = pause, status
        self.now = self.most = self.count = 0
        self.lock = threading.Lock()

    def __call__(self, hit: Hit) -> tuple[int, str]:
        with self.lock:
            self.now += 1
            self.count += 1
            number = self.count
            self.most = max(self.most, self.now)
        try:
            if self.pause:
                threading.Event().wait(self.pause)  # the target's own latency
            return self.status(number), "{}"
        finally:
            with self.lock:
                self.now -= 1


def test_a_host_with_concurrency_2_never_sees_more_than_2_requests_at_once(setup: Callable[..., Setup]) -> None:
    gauge = Gauge(pause=0.15)
    sink = Sink(gauge)
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {concurrency: 2}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in"),
            concurrency=16,
        )
        runs = s.finished(s.put("go", 12))
    finally:
        sink.close()
    assert [r["status"] for r in runs] == ["succeeded"] * 12
    assert gauge.most == 2 and len(sink.hits) == 12
    (host,) = s.worker.delivery.hosts()
    assert host["deferred"]["concurrency"] > 0


def test_a_rate_of_20_per_second_holds_within_10_percent_over_5_seconds(setup: Callable[..., Setup]) -> None:
    sink = Sink()
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {rate: 20/s}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in"),
        )
        runs = s.finished(s.put("go", 130), timeout=30)
        times = sorted(hit.at for hit in sink.hits)
    finally:
        sink.close()
    assert [r["status"] for r in runs] == ["succeeded"] * 130
    in_five = [t for t in times if t < times[0] + 5.0]
    assert 90 <= len(in_five) <= 110, len(in_five)


def test_a_failing_host_opens_its_breaker_and_its_steps_wait_without_spending_attempts(
    setup: Callable[..., Setup],
) -> None:
    sink = Sink(Gauge(status=lambda n: 500 if n <= 10 else 200))
    try:
        s = setup(
            "http: {allow_private: true, hosts: "
            '{"127.0.0.1": {concurrency: 1, breaker: {failures: 10, cooldown: 1s}}}}\n',
            "rules:"
            + post_rule("push", "go", f"{sink.url}/in", retry="{attempts: 20, backoff: 10ms, max_backoff: 20ms}"),
        )
        events = s.put("go", 6)
        runs = s.finished(events)
        hits = sorted(sink.hits, key=lambda hit: hit.at)
    finally:
        sink.close()
    assert [r["status"] for r in runs] == ["succeeded"] * 6
    assert len(hits) == 10 + 6  # ten failures, then each step once: the probe first
    assert hits[10].at - hits[9].at >= 0.9  # nothing was sent while the breaker was open
    (host,) = s.worker.delivery.hosts()
    assert host["breaker"] == "closed" and host["deferred"]["breaker"] > 0
    by_key: dict[str, int] = {}
    for hit in hits:
        by_key[hit.headers["idempotency-key"]] = by_key.get(hit.headers["idempotency-key"], 0) + 1
    for run in runs:
        (step,) = s.store.steps_of_run(run["id"])
        assert step["attempt"] == by_key[f"{run['id']}-0"]  # an attempt per call made, none per wait


def test_a_slow_host_does_not_slow_deliveries_to_a_fast_one(setup: Callable[..., Setup]) -> None:
    slow, fast = Sink(Gauge(pause=2.0)), Sink()
    try:
        s = setup(
            "http: {allow_private: true, concurrency: 2}\n",
            "rules:"
            + post_rule("slow", "slow", f"{slow.url}/in")
            + post_rule("fast", "fast", f"http://localhost:{fast.port}/in"),
            concurrency=4,
        )
        slow_events = s.put("slow", 8)
        fast_runs = s.finished(s.put("fast", 8), timeout=10)
        s.finished(slow_events, timeout=30)
    finally:
        slow.close()
        fast.close()
    assert [r["status"] for r in fast_runs] == ["succeeded"] * 8
    # Every fast call was made before the slow host answered even its first calls: with the
    # slow host's steps in all four threads, none could have been.
    first_slow_answer = min(hit.at for hit in slow.hits) + 2.0
    assert max(hit.at for hit in fast.hits) < first_slow_answer


def test_steps_waiting_for_a_slot_go_back_to_the_store_when_the_worker_stops(setup: Callable[..., Setup]) -> None:
    gauge = Gauge(pause=1.0)
    sink = Sink(gauge)
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {concurrency: 1}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in"),
        )
        events = s.put("go", 5)
        sink.wait_for(1)
        started = time.time()
        s.worker.stop(10)
        stopped_in = time.time() - started
        steps = [step for e in events for run in s.store.runs_of_event(e) for step in s.store.steps_of_run(run["id"])]
    finally:
        sink.close()
    assert stopped_in < 5  # not the whole drain timeout: the waiting steps were handed back at once
    assert sorted((step["status"], step["attempt"]) for step in steps) == [("ready", 0)] * 4 + [("succeeded", 1)]
    assert len(sink.hits) == 1


# -- new steps for a full host wait unrendered -----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://CRM.example.com/jobs", "crm.example.com"),  # a constant URL: known whole
        ("https://crm.example.com", "crm.example.com"),
        ("https://crm.example.com/jobs/{{ event.id }}", "crm.example.com"),
        ("http://127.0.0.1:8080?id={{ event.id }}", "127.0.0.1"),
        ("https://{{ event.host }}/jobs", None),  # the host is the template's
        ("https://crm.example.com{{ event.path }}", None),  # the authority could go on
        ("https://crm.example.com:{{ event.port }}/", None),
        ("https://user:{{ event.pw }}@crm.example.com/", None),
        ("{{ event.url }}", None),
    ],
)
def test_the_http_action_tells_a_step_s_host_before_rendering_when_its_url_does(url: str, host: str | None) -> None:
    from actions.http import HttpAction
    from engine.rules.templates import Templates

    params = Templates().compile_value({"method": "POST", "url": url})
    assert HttpAction.destination(params) == host


def test_a_new_step_for_a_host_without_a_free_slot_waits_before_it_is_rendered(setup: Callable[..., Setup]) -> None:
    release = threading.Event()
    sink = Sink(lambda hit: (release.wait(10), (200, "{}"))[1])
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {concurrency: 1}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in") + f"""
  - name: broken
    event: bad
    actions:
      - http: {{method: POST, url: "{sink.url}/in", json: "{{{{ event.missing }}}}"}}
""",
        )
        (held_call,) = s.put("go", 1)
        sink.wait_for(1)  # the host's one slot is taken
        (bad,) = s.put("bad", 1)
        deadline = time.time() + 10
        while s.worker.delivery.hosts()[0]["deferred"]["concurrency"] < 1 and time.time() < deadline:
            time.sleep(0.01)
        waiting = [r["status"] for r in s.store.runs_of_event(bad)]
        (later,) = s.put("go", 1)  # waits behind it: the slot it does not use passes on
        while s.worker.delivery.hosts()[0]["deferred"]["concurrency"] < 2 and time.time() < deadline:
            time.sleep(0.01)
        release.set()
        runs = s.finished([held_call, bad, later])
    finally:
        release.set()
        sink.close()
    # It waited without being rendered: its render error came only once the slot was free.
    assert s.worker.delivery.hosts()[0]["deferred"]["concurrency"] >= 1 and waiting == ["active"]
    assert sorted((r["rule"], r["status"]) for r in runs) == [
        ("broken", "dead"), ("push", "succeeded"), ("push", "succeeded")
    ]
    assert len(sink.hits) == 2


def test_new_steps_beyond_those_that_may_wait_go_back_to_the_store_unrendered(setup: Callable[..., Setup]) -> None:
    release = threading.Event()
    sink = Sink(lambda hit: (release.wait(10), (200, "{}"))[1])
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {concurrency: 1}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in") + f"""
  - name: broken
    event: bad
    actions:
      - http: {{method: POST, url: "{sink.url}/in", json: "{{{{ event.missing }}}}"}}
""",
            concurrency=2,  # two may wait in the worker; it claims up to eight
        )
        (held_call,) = s.put("go", 1)
        sink.wait_for(1)
        bad = s.put("bad", 5)
        deadline = time.time() + 10
        while s.worker.delivery.hosts()[0]["deferred"]["concurrency"] < 8 and time.time() < deadline:
            time.sleep(0.01)
        while_busy = sorted(r["status"] for e in bad for r in s.store.runs_of_event(e))
        release.set()
        runs = s.finished([held_call, *bad])
    finally:
        release.set()
        sink.close()
    assert s.worker.delivery.hosts()[0]["deferred"]["concurrency"] >= 8  # some came back and waited again
    assert while_busy == ["active"] * 5  # none was rendered while the host was busy
    assert sorted(r["status"] for r in runs) == ["dead"] * 5 + ["succeeded"]


def test_waiting_steps_take_every_slot_that_is_free_when_a_call_ends(setup: Callable[..., Setup]) -> None:
    first, rest = threading.Event(), threading.Event()
    lock, seen = threading.Lock(), [0]

    def respond(hit: Hit) -> tuple[int, str]:
        with lock:
            seen[0] += 1
            number = seen[0]
        (first if number == 1 else rest).wait(30)
        return 200, "{}"

    sink = Sink(respond)
    try:
        s = setup(
            'http: {allow_private: true, hosts: {"127.0.0.1": {concurrency: 3}}}\n',
            "rules:" + post_rule("push", "go", f"{sink.url}/in"),
            concurrency=8,
        )
        events = s.put("go", 1)
        sink.wait_for(1)
        events += s.put("go", 5)
        sink.wait_for(3)  # the three slots are taken; three steps wait
        wider = {"allow_private": True, "hosts": {"127.0.0.1": {"concurrency": 6}}}
        s.worker.delivery.configure(Http.model_validate(wider))
        first.set()  # one call ends: four slots are free now, and all three waiting steps start
        sink.wait_for(6, timeout=5)  # not one by one as calls end (none ends before 30 s)
        rest.set()
        runs = s.finished(events)
    finally:
        first.set()
        rest.set()
        sink.close()
    assert [r["status"] for r in runs] == ["succeeded"] * 6

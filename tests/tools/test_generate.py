"""``segstream generate``: exact, deterministic, parseable, persona-shaped synthetic clickstream."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from segstream.operators.events import Event, Reason, Rejected
from segstream.operators.parse import EventParser
from segstream.tools.generate import (
    MALFORMED_KINDS,
    PERSONAS,
    GeneratedLog,
    UserTruth,
    generate,
    register,
    truth_path,
    write_log,
)

PARSER = EventParser()
START = datetime(2024, 1, 1, tzinfo=UTC)
START_S = START.timestamp()
DAYS = 60
END_S = START_S + DAYS * 86400
TRACK_NAMES = {"Product Viewed", "Products Searched", "Product Added", "Cart Viewed",
               "Checkout Started", "Order Completed", "Signed Up"}
MALFORMED_REASONS = {Reason.NOT_JSON, Reason.NOT_OBJECT, Reason.MISSING_ID, Reason.MISSING_TIMESTAMP,
                     Reason.BAD_TIMESTAMP, Reason.WRONG_TYPE, Reason.MISSING_EVENT}
SUBCOMMANDS = ("run", "demo", "generate", "replay", "lookup")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def log() -> GeneratedLog:
    return generate(400, 12000, 11)


@pytest.fixture(scope="module")
def parsed(log: GeneratedLog) -> list[Event | Rejected]:
    return [PARSER.parse(line) for line in log.lines]


@pytest.fixture(scope="module")
def events(parsed: list[Event | Rejected]) -> list[Event]:
    return [e for e in parsed if isinstance(e, Event)]


@pytest.fixture(scope="module")
def by_user(events: list[Event]) -> dict[str, list[Event]]:
    users: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        users[event.key].append(event)
    return users


@pytest.fixture(scope="module")
def truth(log: GeneratedLog) -> dict[str, UserTruth]:
    return {user.user_id: user for user in log.truth}


class TestDeterminism:
    def test_same_arguments_same_bytes(self, log: GeneratedLog) -> None:
        """The same arguments give byte-identical lines and identical truth."""
        again = generate(400, 12000, 11)
        assert again.lines == log.lines
        assert again.truth == log.truth
        assert again.malformed == log.malformed

    def test_other_seed_other_log(self, log: GeneratedLog) -> None:
        """A different seed gives a different log of the same size."""
        other = generate(400, 12000, 12)
        assert len(other.lines) == len(log.lines)
        assert other.lines != log.lines

    def test_global_random_state_is_untouched(self) -> None:
        """Generation neither reads nor advances the global random generator."""
        import random

        random.seed(5)
        expected = random.random()
        random.seed(5)
        generate(20, 500, 1)
        assert random.random() == expected


class TestSize:
    @pytest.mark.parametrize(("users", "events"), [(1, 0), (1, 1), (3, 7), (50, 1000), (200, 50)])
    def test_exact_line_count(self, users: int, events: int) -> None:
        """Exactly ``events`` lines come out, whatever the ratio of users to events."""
        assert len(generate(users, events, 0).lines) == events

    def test_malformed_count_is_rounded_rate(self) -> None:
        """The number of malformed lines is the rate times the total, rounded."""
        assert generate(30, 2000, 0, malformed_rate=0.01).malformed == 20
        assert generate(30, 2000, 0, malformed_rate=0).malformed == 0

    def test_all_malformed(self) -> None:
        """With rate 1 every line is malformed and no user has a valid event."""
        log = generate(5, 14, 0, malformed_rate=1.0)
        assert log.malformed == 14 and log.truth == []
        assert all(isinstance(PARSER.parse(line), Rejected) for line in log.lines)

    def test_more_users_than_events(self) -> None:
        """When events are scarce, only users who got one appear in the truth."""
        log = generate(200, 50, 0, malformed_rate=0)
        keys = {e.key for e in map(PARSER.parse, log.lines) if isinstance(e, Event)}
        assert keys == {user.user_id for user in log.truth}
        assert 0 < len(log.truth) < 200

    @pytest.mark.parametrize("bad", [{"users": 0}, {"events": -1}, {"malformed_rate": 1.5},
                                     {"days": 0}, {"days": float("nan")}, {"arrival_jitter_s": -1.0},
                                     {"arrival_jitter_s": float("inf")}], ids=str)
    def test_bad_arguments_raise(self, bad: dict[str, Any]) -> None:
        """Impossible arguments raise ValueError naming the argument."""
        arguments: dict[str, Any] = {"users": 10, "events": 100, "seed": 0} | bad
        with pytest.raises(ValueError, match=next(iter(bad))):
            generate(**arguments)


class TestValidity:
    def test_valid_and_malformed_lines(self, log: GeneratedLog, parsed: list[Event | Rejected]) -> None:
        """Exactly ``malformed`` lines are rejected; every other line parses to an Event."""
        rejected = [r for r in parsed if isinstance(r, Rejected)]
        assert len(rejected) == log.malformed == round(12000 * 0.005)
        assert len(parsed) - len(rejected) == 12000 - log.malformed

    def test_every_malformed_kind_present(self, parsed: list[Event | Rejected]) -> None:
        """Each kind of damage appears, each rejected for its own reason, in even shares."""
        reasons = Counter(r.reason for r in parsed if isinstance(r, Rejected))
        assert set(reasons) == MALFORMED_REASONS
        assert len(MALFORMED_KINDS) == len(MALFORMED_REASONS)
        assert max(reasons.values()) - min(reasons.values()) <= 1

    def test_each_kind_with_seven_malformed(self) -> None:
        """Seven malformed lines are enough for one of each kind."""
        log = generate(20, 700, 3, malformed_rate=0.01)
        reasons = {r.reason for r in map(PARSER.parse, log.lines) if isinstance(r, Rejected)}
        assert reasons == MALFORMED_REASONS

    def test_message_ids_are_unique(self, log: GeneratedLog, events: list[Event]) -> None:
        """Every message id in the log, valid or malformed, is unique."""
        assert len({e.message_id for e in events}) == len(events)
        ids = re.findall(rb'"messageId":"([^"]+)"', b"\n".join(log.lines))
        assert len(ids) == len(set(ids)) > len(events)

    def test_event_shape(self, log: GeneratedLog, events: list[Event]) -> None:
        """Events use the Segment names and carry the properties and context the pipeline reads."""
        assert {e.type for e in events} == {"track", "page", "identify"}
        assert {e.name for e in events if e.type == "track"} == TRACK_NAMES
        for event in events:
            assert event.context["device"]["type"] in {"mobile", "desktop", "tablet"}
            assert event.context["location"]["country"]
            assert event.context["campaign"]["source"]
            if event.name == "Order Completed":
                assert event.revenue > 0 and event.properties["quantity"] >= 1
            else:
                assert event.revenue == 0.0
            if event.name == "Products Searched":
                assert event.properties["query"]
            if event.name in ("Product Viewed", "Product Added"):
                assert {"product_id", "category", "price"} <= set(event.properties)
            if event.name == "Product Added":
                assert event.properties["quantity"] >= 1
            if event.type == "page":
                assert event.name and event.role == "page_view"

    def test_timestamp_format(self, log: GeneratedLog, parsed: list[Event | Rejected]) -> None:
        """Valid timestamps are ISO-8601 UTC with milliseconds and a Z."""
        for line, result in zip(log.lines, parsed, strict=True):
            if isinstance(result, Event):
                assert ISO_MS.match(orjson.loads(line)["timestamp"])


class TestTime:
    def test_sorted_and_inside_window(self, events: list[Event]) -> None:
        """Valid events are in timestamp order and inside [start, start + days)."""
        stamps = [e.timestamp for e in events]
        assert stamps == sorted(stamps)
        assert START_S <= stamps[0] and stamps[-1] < END_S

    def test_custom_window(self) -> None:
        """--start and --days move and shrink the window, even to an hour."""
        start = datetime(2023, 6, 30, 23, 0, tzinfo=UTC)
        log = generate(30, 600, 2, start=start, days=1 / 24, malformed_rate=0)
        parsed = [PARSER.parse(line) for line in log.lines]
        stamps = [e.timestamp for e in parsed if isinstance(e, Event)]
        assert len(stamps) == 600
        assert stamps == sorted(stamps)
        assert start.timestamp() <= stamps[0] and stamps[-1] < (start + timedelta(hours=1)).timestamp()

    def test_naive_start_is_utc(self) -> None:
        """A naive start means UTC."""
        naive = generate(5, 50, 1, start=datetime(2024, 1, 1), malformed_rate=0)  # noqa: DTZ001
        assert naive == generate(5, 50, 1, malformed_rate=0)

    def test_sessions_are_well_separated(self, by_user: dict[str, list[Event]]) -> None:
        """Within a session events are at most 5 minutes apart; sessions are at least 2 hours apart."""
        sessions = 0
        for user_events in by_user.values():
            stamps = [e.timestamp for e in user_events]
            gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
            assert all(g <= 300 or g >= 7200 for g in gaps)
            sessions += 1 + sum(g >= 7200 for g in gaps)
        assert sessions > 1.5 * len(by_user)

    def test_activity_is_skewed(self, by_user: dict[str, list[Event]]) -> None:
        """Some users are far more active than the median user."""
        counts = sorted(len(v) for v in by_user.values())
        assert counts[-1] > 5 * counts[len(counts) // 2]


JITTER_S = 120.0


@pytest.fixture(scope="module")
def jittered(log: GeneratedLog) -> GeneratedLog:
    return generate(400, 12000, 11, arrival_jitter_s=JITTER_S)


class TestArrivalJitter:
    def test_zero_jitter_is_the_sorted_log(self, log: GeneratedLog) -> None:
        """Jitter 0 (the default) gives exactly the event-time-ordered log."""
        assert generate(400, 12000, 11, arrival_jitter_s=0.0) == log

    def test_same_lines_other_order(self, log: GeneratedLog, jittered: GeneratedLog) -> None:
        """Jitter only reorders: same lines, same truth, same malformed lines in the same relative order."""
        assert jittered.lines != log.lines
        assert sorted(jittered.lines) == sorted(log.lines)
        assert (jittered.truth, jittered.malformed) == (log.truth, log.malformed)

        def malformed(lines: list[bytes]) -> list[bytes]:
            return [line for line in lines if isinstance(PARSER.parse(line), Rejected)]
        assert malformed(jittered.lines) == malformed(log.lines)

    def test_no_event_after_one_more_than_the_jitter_younger(self, jittered: GeneratedLog) -> None:
        """For e written before f, ts(e) - ts(f) <= jitter: all on time for a watermark of max - jitter."""
        newest = float("-inf")
        behind = []
        for line in jittered.lines:
            event = PARSER.parse(line)
            if isinstance(event, Event):
                behind.append(newest - event.timestamp)
                newest = max(newest, event.timestamp)
        assert max(behind) <= JITTER_S
        reordered = [lag for lag in behind if lag > 0]
        assert len(reordered) > 100  # jitter does reorder, and by amounts near the bound
        assert max(reordered) > 0.8 * JITTER_S

    def test_deterministic(self, jittered: GeneratedLog) -> None:
        """The same arguments give the same order; another jitter another order."""
        assert generate(400, 12000, 11, arrival_jitter_s=JITTER_S) == jittered
        assert generate(400, 12000, 11, arrival_jitter_s=60.0).lines != jittered.lines

    def test_events_of_one_user_keep_their_events(self, by_user: dict[str, list[Event]],
                                                  jittered: GeneratedLog) -> None:
        """Sorted per user, the jittered log has the same timelines as the sorted one."""
        again: dict[str, list[Event]] = defaultdict(list)
        for result in map(PARSER.parse, jittered.lines):
            if isinstance(result, Event):
                again[result.key].append(result)
        assert {key: sorted(e.message_id for e in events) for key, events in again.items()} == {
            key: sorted(e.message_id for e in events) for key, events in by_user.items()}


class TestPersonas:
    def _per_persona(self, by_user: dict[str, list[Event]], truth: dict[str, UserTruth],
                     role: str) -> dict[str, float]:
        """Mean count of events with ``role`` per user, by persona."""
        totals: Counter[str] = Counter()
        users: Counter[str] = Counter()
        for key, user_events in by_user.items():
            persona = truth[key].persona
            users[persona] += 1
            totals[persona] += sum(e.role == role for e in user_events)
        return {p: totals[p] / users[p] for p in PERSONAS}

    def test_persona_shares(self, truth: dict[str, UserTruth]) -> None:
        """Every persona is present in roughly its share: 35/25/20/20 %."""
        shares = Counter(user.persona for user in truth.values())
        assert shares == {"browser": 140, "bargain_hunter": 100, "loyal_buyer": 80, "churner": 80}

    def test_purchases_by_persona(self, by_user: dict[str, list[Event]], truth: dict[str, UserTruth]) -> None:
        """Loyal buyers buy most, bargain hunters some, browsers almost never."""
        purchases = self._per_persona(by_user, truth, "purchase")
        assert purchases["loyal_buyer"] > 2 * purchases["bargain_hunter"]
        assert purchases["bargain_hunter"] > 5 * purchases["browser"]
        assert purchases["browser"] < 0.1

    def test_searches_and_cart_abandonment(self, by_user: dict[str, list[Event]],
                                           truth: dict[str, UserTruth]) -> None:
        """Bargain hunters search most and abandon most of their checkouts; loyal buyers complete them."""
        searches = self._per_persona(by_user, truth, "search")
        assert searches["bargain_hunter"] == max(searches.values())
        checkouts = self._per_persona(by_user, truth, "checkout")
        purchases = self._per_persona(by_user, truth, "purchase")
        assert purchases["bargain_hunter"] / checkouts["bargain_hunter"] < 0.6
        assert purchases["loyal_buyer"] / checkouts["loyal_buyer"] > 0.8

    def test_order_values(self, by_user: dict[str, list[Event]], truth: dict[str, UserTruth]) -> None:
        """Loyal buyers' orders are worth several times bargain hunters' orders."""
        values: dict[str, list[float]] = defaultdict(list)
        for key, user_events in by_user.items():
            values[truth[key].persona] += [e.revenue for e in user_events if e.role == "purchase"]
        mean = {p: sum(v) / len(v) for p, v in values.items() if v}
        assert mean["loyal_buyer"] > 3 * mean["bargain_hunter"]

    def test_churners_go_silent(self, by_user: dict[str, list[Event]], truth: dict[str, UserTruth]) -> None:
        """Churners have no events in the last 40 % of the period; most other users do."""
        late = START_S + 0.6 * DAYS * 86400
        active_late = {key for key, user_events in by_user.items() if user_events[-1].timestamp >= late}
        churners = {key for key, user in truth.items() if user.persona == "churner"}
        assert not churners & active_late
        assert len(active_late) > 0.75 * (len(truth) - len(churners))
        assert all(user.churned == (user.persona == "churner") for user in truth.values())


class TestIdentity:
    def test_truth_lists_every_valid_user(self, by_user: dict[str, list[Event]],
                                          truth: dict[str, UserTruth], log: GeneratedLog) -> None:
        """The truth has one entry per distinct user key with valid events, and no other."""
        assert set(truth) == set(by_user)
        assert len(truth) == len(log.truth) == 400

    def test_anonymous_users(self, by_user: dict[str, list[Event]], truth: dict[str, UserTruth]) -> None:
        """About 10 % of users only ever send an anonymousId and never identify."""
        anonymous = {key for key, user in truth.items() if user.anonymous}
        assert len(anonymous) == 40
        for key in anonymous:
            assert all(e.user_id is None and e.anonymous_id == key for e in by_user[key])
            assert all(e.type != "identify" and e.name != "Signed Up" for e in by_user[key])

    def test_known_users_identify_once(self, by_user: dict[str, list[Event]],
                                       truth: dict[str, UserTruth]) -> None:
        """Known users carry userId "uN" and one stable anonymousId, and identify and sign up once."""
        for key, user in truth.items():
            if user.anonymous:
                continue
            user_events = by_user[key]
            assert re.fullmatch(r"u\d+", key)
            assert len({e.anonymous_id for e in user_events}) == 1
            assert all(e.user_id == key for e in user_events)
            identifies = [e for e in user_events if e.type == "identify"]
            assert len(identifies) == 1
            assert set(identifies[0].traits) == {"email", "name", "plan"}
            assert sum(e.role == "signup" for e in user_events) == 1


class TestFiles:
    def test_write_plain_and_truth(self, tmp_path: Path) -> None:
        """write_log writes one line per event and the truth beside the log."""
        log = generate(20, 300, 4)
        side = write_log(log, tmp_path / "clicks.jsonl")
        assert side == tmp_path / "clicks.truth.jsonl"
        assert (tmp_path / "clicks.jsonl").read_bytes() == b"".join(line + b"\n" for line in log.lines)
        rows = [orjson.loads(line) for line in side.read_bytes().splitlines()]
        assert rows == [{"user_id": u.user_id, "persona": u.persona, "churned": u.churned,
                         "anonymous": u.anonymous} for u in log.truth]

    def test_write_gzip_is_readable_and_deterministic(self, tmp_path: Path) -> None:
        """A .gz path writes gzip that reads back to the same lines, byte-identical on rewrite."""
        log = generate(20, 300, 4)
        out = tmp_path / "clicks.jsonl.gz"
        side = write_log(log, out)
        assert side == tmp_path / "clicks.truth.jsonl"
        with gzip.open(out, "rb") as handle:
            assert handle.read().splitlines() == log.lines
        first = out.read_bytes()
        write_log(generate(20, 300, 4), out)
        assert out.read_bytes() == first

    def test_truth_path(self) -> None:
        """The truth file drops .jsonl / .jsonl.gz and adds .truth.jsonl."""
        assert truth_path("a/b.jsonl.gz") == Path("a/b.truth.jsonl")
        assert truth_path("b.jsonl") == Path("b.truth.jsonl")
        assert truth_path("b.ndjson") == Path("b.ndjson.truth.jsonl")


def _own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segstream")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


class TestCommand:
    def test_generate_command(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The generate subcommand writes the log and truth and prints a one-line summary."""
        out = tmp_path / "g.jsonl"
        args = _own_parser().parse_args(["generate", "--users", "30", "--events", "900", "--seed", "3",
                                         "--out", str(out), "--malformed-rate", "0.01",
                                         "--start", "2024-02-01T00:00:00Z", "--days", "7"])
        assert args.func(args) == 0
        lines = out.read_bytes().splitlines()
        expected = generate(30, 900, 3, start=datetime(2024, 2, 1, tzinfo=UTC), days=7, malformed_rate=0.01)
        assert lines == expected.lines
        assert (tmp_path / "g.truth.jsonl").exists()
        summary = capsys.readouterr().out.strip().splitlines()
        assert len(summary) == 1
        assert "900 events" in summary[0] and "9 malformed" in summary[0] and str(out) in summary[0]

    def test_defaults(self) -> None:
        """Defaults: 1000 users, 100000 events, seed 0, rate 0.005, 60 days from 2024-01-01Z."""
        args = _own_parser().parse_args(["generate", "--out", "x.jsonl"])
        assert (args.users, args.events, args.seed, args.malformed_rate, args.days) == (
            1000, 100000, 0, 0.005, 60.0)
        assert args.start == START
        assert args.arrival_jitter == 0.0

    def test_arrival_jitter_flag(self, tmp_path: Path) -> None:
        """--arrival-jitter writes the jittered order; a negative jitter exits 2."""
        out = tmp_path / "j.jsonl"
        args = _own_parser().parse_args(["generate", "--users", "30", "--events", "900", "--seed", "3",
                                         "--out", str(out), "--arrival-jitter", "300"])
        assert args.func(args) == 0
        assert out.read_bytes().splitlines() == generate(30, 900, 3, arrival_jitter_s=300).lines
        assert out.read_bytes().splitlines() != generate(30, 900, 3).lines
        args = _own_parser().parse_args(["generate", "--out", str(out), "--arrival-jitter", "-1"])
        assert args.func(args) == 2

    def test_bad_values_exit_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Impossible values give exit code 2 and a message on stderr, and write nothing."""
        out = tmp_path / "g.jsonl"
        args = _own_parser().parse_args(["generate", "--users", "0", "--out", str(out)])
        assert args.func(args) == 2
        assert "users" in capsys.readouterr().err
        assert not out.exists()

    def test_bad_start_is_a_usage_error(self) -> None:
        """A --start that is not ISO-8601 is rejected by the argument parser."""
        with pytest.raises(SystemExit):
            _own_parser().parse_args(["generate", "--out", "x.jsonl", "--start", "last tuesday"])

    @pytest.mark.skipif(
        any(importlib.util.find_spec(f"segstream.tools.{name}") is None for name in SUBCOMMANDS),
        reason="segstream.cli imports every subcommand module; not all exist yet",
    )
    def test_console_entry_point(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`segstream generate ...` through the real CLI dispatcher exits 0 and writes the files."""
        from segstream.cli import main  # noqa: PLC0415

        out = tmp_path / "cli.jsonl.gz"
        assert main(["generate", "--users", "10", "--events", "200", "--out", str(out)]) == 0
        with gzip.open(out, "rb") as handle:
            assert handle.read().splitlines() == generate(10, 200, 0).lines
        assert (tmp_path / "cli.truth.jsonl").exists()
        assert "200 events" in capsys.readouterr().out

"""``segstream generate``: a deterministic synthetic Segment-Spec clickstream with known personas.

Load tests, the demo and the model checks need a clickstream whose answer is
known. This module writes one: ``users`` users, each given one of four
personas, produce exactly ``events`` JSON lines (Segment Spec ``track``,
``page`` and ``identify`` calls) in global event-time order (or in a jittered
arrival order, see below), and the persona of every user goes to a
ground-truth side file.

Personas (the behaviour differs in mix, not in kind, and every user's
parameters are jittered, so the classes are separable but noisy):

- ``browser``: sessions of page and product views with some searches; adds to
  cart rarely and almost never buys.
- ``bargain_hunter``: many searches (``cheap ...``, ``sale ...``) and cart adds
  of cheap products, starts checkouts, abandons most of them.
- ``loyal_buyer``: regular, evenly spaced sessions that usually end in an
  order; pricier products, larger quantities, the most active persona.
- ``churner``: short mobile sessions, active in the first part of the period
  only (its last event falls before 60 % of it) and then silent
  (``churned=True``; no other persona churns).

About 10 % of users are anonymous-only (only ``anonymousId``, never
identified). Every other user carries ``userId`` (``"u"`` + number) and a
stable ``anonymousId`` on every event, and sends one ``Signed Up`` track and
one ``identify`` (traits ``email``, ``name``, ``plan``) in one of their
sessions (users given fewer than three events skip those two).

Time: each user's sessions are at least two hours apart (far more than the
30-minute session gap); events within a session are 2 s to 5 min apart. The
total is split across users with a log-normal weight, so a few users are much
more active than most. Every timestamp lies in ``[start, start + days)``,
formatted ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

Malformed lines (about ``malformed_rate`` of the total, every kind present
once there are at least seven) are copies of valid events broken in one of
the :data:`MALFORMED_KINDS` ways; each is rejected by
:class:`~segstream.operators.parse.EventParser`, and every other line parses
to an :class:`~segstream.operators.events.Event`. They are extra lines: the
user they were copied from keeps the original.

Arrival jitter (``arrival_jitter_s``, ``--arrival-jitter``): a live stream is
not sorted. With a jitter ``J > 0`` each valid line gets an arrival time of its
event time plus a uniform draw from ``[0, J)`` (drawn from the same seeded
generator, after everything else, so the lines themselves do not change), and
lines are written in arrival order; malformed lines stay at the event time of
the line they were copied from. So for any two valid events ``e`` written
before ``f``, ``ts(e) - ts(f) <= J``: every event is on time for a watermark of
"largest event time seen minus ``J``" (``allowed_lateness_s >= J``). ``J = 0``
(the default) writes exactly the sorted log.

Determinism: one ``random.Random(seed)``, no global random state, no clock;
the same arguments give byte-identical lines, and (gzip header time fixed to
0) byte-identical files.

Speed (measured): 1,000,000 events for 100,000 users generate in about 6 s;
the whole command takes about 7.5 s writing ``.jsonl`` (312 MiB) and 9.5 s
writing ``.jsonl.gz`` (27 MiB), peak memory about 0.9 GB (all lines are held
to sort them). Python 3.11, one core of this two-core machine.

>>> log = generate(users=20, events=400, seed=3)
>>> len(log.lines), log.malformed
(400, 2)
>>> log == generate(users=20, events=400, seed=3)
True
>>> sorted({user.persona for user in log.truth})
['bargain_hunter', 'browser', 'churner', 'loyal_buyer']
"""

from __future__ import annotations

import argparse
import gzip
import math
import random
import sys
from bisect import bisect
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)
"""Default start of the generated period (``--start``)."""

PERSONAS: tuple[str, ...] = ("browser", "bargain_hunter", "loyal_buyer", "churner")
"""The persona names, as written in the ground truth."""

MALFORMED_KINDS: tuple[str, ...] = (
    "truncated",
    "array",
    "missing_ids",
    "missing_timestamp",
    "bad_timestamp",
    "properties_list",
    "track_without_event",
)
"""The ways a line is broken: cut-off JSON, a JSON array, neither ``userId`` nor
``anonymousId``, no ``timestamp``, a non-ISO ``timestamp``, ``properties`` as a
list, a ``track`` without ``event``."""

ANONYMOUS_SHARE = 0.10
"""Share of users who never identify (only ``anonymousId``)."""

SESSION_GAP_MIN_S = 2 * 3600
"""Smallest gap between two sessions of one user, seconds."""

_MS_PER_DAY = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SESSION_GAP_MS = SESSION_GAP_MIN_S * 1000
_MERGE_GAP_MS = 60_000  # gap inside a session made by merging two (tiny periods only)

# Actions. The first five are drawn from a persona's mix; the rest are placed.
_PAGE, _VIEW, _SEARCH, _ADD, _CART, _CHECKOUT, _ORDER, _SIGNUP, _IDENTIFY = range(9)

_CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("electronics", ("wireless headphones", "usb-c charger", "smart watch", "bluetooth speaker")),
    ("books", ("fantasy novel", "cookbook", "python programming", "travel guide")),
    ("fashion", ("running shoes", "rain jacket", "wool sweater", "sunglasses")),
    ("home", ("coffee maker", "desk lamp", "bed sheets", "storage boxes")),
    ("beauty", ("face cream", "shampoo", "perfume", "sunscreen")),
    ("sports", ("yoga mat", "dumbbells", "bike helmet", "tennis racket")),
    ("toys", ("building blocks", "board game", "puzzle", "plush bear")),
    ("grocery", ("green tea", "olive oil", "dark chocolate", "protein bars")),
)
_N_PRODUCTS = 400
_PAGES: tuple[tuple[str, str], ...] = (
    ("Home", "/"), ("Category", "/category"), ("Deals", "/deals"),
    ("Blog", "/blog"), ("Account", "/account"), ("Help", "/help"),
)
_DEVICES = ("mobile", "desktop", "tablet")
_COUNTRIES = ("US", "GB", "DE", "FR", "IN", "BR", "CA", "JP", "AU", "ES")
_COUNTRY_WEIGHTS = (35, 12, 10, 8, 10, 7, 6, 5, 4, 3)
_SOURCES = ("organic", "social", "email", "direct", "paid", "coupon", "affiliate")
_PLANS = ("free", "plus", "pro")
_FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dev", "Eva", "Femi", "Gus", "Hana", "Ivan", "Jun",
                "Kara", "Luis", "Mia", "Noor", "Omar", "Pia", "Ravi", "Sofia", "Tom", "Yara")
_LAST_NAMES = ("Smith", "Garcia", "Müller", "Rossi", "Tanaka", "Okafor", "Silva", "Novak",
               "Khan", "Dubois", "Larsen", "Kim", "Haddad", "Moreau", "Ivanova", "Brown")
_BAD_TIMESTAMPS = ("yesterday", "2024-13-45T25:61:00Z", "01/02/2024 10:00", "", "2024-01-01T10:00:00+25:00")


@dataclass(frozen=True, slots=True)
class _Persona:
    """How one persona behaves; every user jitters these numbers."""

    share: float  # share of users
    activity: float  # weight of the user's share of all events
    session_len: float  # mean events per session
    actions: tuple[float, float, float, float, float]  # page, view, search, add, cart
    landing: float  # chance a session opens with a page call (else with an action of the mix)
    p_checkout: float  # chance a session (>= 4 events) ends in a checkout
    p_order: float  # chance a checkout becomes an order
    price_exponent: float  # product rank = u ** e over a price-sorted catalog: > 1 cheap, < 1 dear
    max_quantity: int
    regular: bool  # evenly spaced sessions rather than bursty ones
    churns: bool
    devices: tuple[float, float, float]  # mobile, desktop, tablet
    sources: tuple[float, ...]  # weights over _SOURCES
    pages: tuple[float, ...]  # weights over _PAGES
    plans: tuple[float, float, float]  # free, plus, pro
    query_prefixes: tuple[str, ...]


_PERSONAS: dict[str, _Persona] = {
    "browser": _Persona(
        share=0.35, activity=1.0, session_len=6.0, actions=(0.35, 0.55, 0.08, 0.02, 0.0),
        landing=0.8, p_checkout=0.02, p_order=0.3, price_exponent=1.0, max_quantity=1, regular=False,
        churns=False, devices=(0.6, 0.25, 0.15), sources=(35, 40, 10, 15, 0, 0, 0),
        pages=(20, 35, 5, 30, 5, 5), plans=(0.85, 0.15, 0.0), query_prefixes=("", "", "best ", "new "),
    ),
    "bargain_hunter": _Persona(
        share=0.25, activity=1.0, session_len=6.0, actions=(0.05, 0.20, 0.45, 0.20, 0.10),
        landing=0.3, p_checkout=0.35, p_order=0.4, price_exponent=3.0, max_quantity=2, regular=False,
        churns=False, devices=(0.5, 0.4, 0.1), sources=(5, 0, 20, 0, 20, 35, 20),
        pages=(10, 15, 60, 5, 5, 5), plans=(0.7, 0.3, 0.0),
        query_prefixes=("cheap ", "discount ", "sale ", "", "deal "),
    ),
    "loyal_buyer": _Persona(
        share=0.20, activity=1.6, session_len=5.0, actions=(0.10, 0.30, 0.02, 0.38, 0.20),
        landing=0.5, p_checkout=0.7, p_order=0.9, price_exponent=0.4, max_quantity=3, regular=True,
        churns=False, devices=(0.3, 0.6, 0.1), sources=(15, 0, 40, 45, 0, 0, 0),
        pages=(40, 10, 5, 5, 35, 5), plans=(0.15, 0.35, 0.5), query_prefixes=("",),
    ),
    "churner": _Persona(
        share=0.20, activity=0.6, session_len=3.0, actions=(0.70, 0.25, 0.03, 0.02, 0.0),
        landing=0.9, p_checkout=0.1, p_order=0.5, price_exponent=1.0, max_quantity=1, regular=False,
        churns=True, devices=(0.8, 0.12, 0.08), sources=(15, 35, 0, 0, 50, 0, 0),
        pages=(50, 20, 10, 10, 0, 10), plans=(0.9, 0.1, 0.0), query_prefixes=("", "free "),
    ),
}


@dataclass(frozen=True, slots=True)
class UserTruth:
    """What one generated user really is; one line of the ``.truth.jsonl`` side file.

    Attributes:
        user_id: the identity the pipeline keys the user by: ``userId``, or
            ``anonymousId`` for anonymous users.
        persona: one of :data:`PERSONAS`.
        churned: the user stopped for good part-way through the period.
        anonymous: the user never identifies (no ``userId`` on any event).

    """

    user_id: str
    persona: str
    churned: bool
    anonymous: bool


@dataclass(frozen=True, slots=True)
class GeneratedLog:
    """A generated clickstream and its ground truth.

    Attributes:
        lines: one JSON event per line (no newline), in event-time order
            (or jittered arrival order), malformed lines included.
        truth: one entry per user with at least one valid event, in user order.
        malformed: how many of ``lines`` are malformed.

    """

    lines: list[bytes]
    truth: list[UserTruth]
    malformed: int


@dataclass(slots=True)
class _User:
    number: int  # 1-based; the N of userId "uN", message ids, cart and order ids
    persona: str
    anonymous: bool
    user_id: str | None
    anonymous_id: str
    weight: float


def generate(
    users: int,
    events: int,
    seed: int,
    *,
    start: datetime = DEFAULT_START,
    days: float = 60,
    malformed_rate: float = 0.005,
    arrival_jitter_s: float = 0.0,
) -> GeneratedLog:
    """Generate a clickstream of exactly ``events`` lines for up to ``users`` users.

    Args:
        users: number of users. Each gets at least one event (three if
            identified) while ``events`` allows; the rest get none and have no
            ground-truth entry.
        events: number of lines, malformed ones included.
        seed: seed of the one random generator used; same arguments, same bytes.
        start: start of the period; a naive datetime is read as UTC.
        days: length of the period; every timestamp is before ``start + days``.
        malformed_rate: share of malformed lines, rounded to a whole number.
        arrival_jitter_s: if > 0, lines are ordered by event time plus a
            uniform delay in ``[0, arrival_jitter_s)`` instead of event time,
            so an event is never written after one more than
            ``arrival_jitter_s`` seconds younger than itself.

    Returns:
        The lines in event-time order, or jittered arrival order (ties keep
        generation order), and the truth.

    Raises:
        ValueError: a negative count, ``users < 1``, a rate outside [0, 1], a
            period shorter than a millisecond or a negative or infinite jitter.

    >>> log = generate(users=2, events=12, seed=0, malformed_rate=0)
    >>> [orjson.loads(line)["timestamp"] < "2024-03-01" for line in log.lines] == [True] * 12
    True
    >>> len(log.truth), log.truth[0].user_id.startswith(("u", "a"))
    (2, True)

    """
    if users < 1:
        raise ValueError(f"generate: users must be >= 1, got {users}")
    if events < 0:
        raise ValueError(f"generate: events must be >= 0, got {events}")
    if not 0.0 <= malformed_rate <= 1.0:
        raise ValueError(f"generate: malformed_rate must be in [0, 1], got {malformed_rate}")
    if not math.isfinite(days) or days * _MS_PER_DAY < 1:
        raise ValueError(f"generate: days must be a positive length of at least 1 ms, got {days}")
    if not (math.isfinite(arrival_jitter_s) and arrival_jitter_s >= 0):
        raise ValueError(f"generate: arrival_jitter_s must be a finite number >= 0, got {arrival_jitter_s}")
    span_ms = int(days * _MS_PER_DAY)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    start_ms = (start - _EPOCH) // timedelta(milliseconds=1)

    rng = random.Random(seed)
    n_bad = min(events, round(events * malformed_rate))
    n_good = events - n_bad
    catalog = _catalog(rng)
    people = _users(rng, users)
    counts = _allocate(rng, people, n_good)

    writer = _Writer(rng, seed, start_ms, span_ms, catalog)
    truth: list[UserTruth] = []
    for user, count in zip(people, counts, strict=True):
        if count == 0:
            continue
        persona = _PERSONAS[user.persona]
        key = user.user_id or user.anonymous_id
        truth.append(UserTruth(key, user.persona, persona.churns, user.anonymous))
        writer.user(user, persona, count)

    stamps, lines = writer.stamps, writer.lines
    n_valid = len(lines)
    _add_malformed(rng, seed, n_bad, stamps, lines, start_ms)
    arrivals: Sequence[float] = stamps
    if arrival_jitter_s > 0:
        jitter_ms = arrival_jitter_s * 1000.0
        jittered = [stamp + rng.random() * jitter_ms for stamp in stamps[:n_valid]]
        jittered.extend(stamps[n_valid:])  # malformed lines: at their source's event time, as unjittered
        arrivals = jittered
    order = sorted(range(len(arrivals)), key=arrivals.__getitem__)  # stable: ties keep creation order
    return GeneratedLog(lines=[lines[i] for i in order], truth=truth, malformed=n_bad)


def truth_path(out_path: str | Path) -> Path:
    """Return the ground-truth side file that goes with a log file.

    >>> truth_path("runs/clicks.jsonl.gz").as_posix()
    'runs/clicks.truth.jsonl'
    >>> truth_path("clicks.jsonl").name, truth_path("clicks.log").name
    ('clicks.truth.jsonl', 'clicks.log.truth.jsonl')
    """
    out = Path(out_path)
    name = out.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return out.with_name(f"{name}.truth.jsonl")


def write_log(log: GeneratedLog, out_path: str | Path) -> Path:
    """Write the lines to ``out_path`` and the ground truth beside it.

    A ``.gz`` suffix writes gzip (header time 0, so the file is as
    deterministic as the lines). Each line ends with a newline. The truth goes
    to :func:`truth_path` ``(out_path)``, one JSON object per user
    (``user_id``, ``persona``, ``churned``, ``anonymous``).

    Args:
        log: what :func:`generate` returned.
        out_path: the log file; its directory must exist.

    Returns:
        The path of the truth file.

    Raises:
        OSError: a file cannot be written.

    """
    out = Path(out_path)
    with open(out, "wb") as raw:
        if out.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as zipped:
                _write_lines(zipped, log.lines)
        else:
            _write_lines(raw, log.lines)
    side = truth_path(out)
    with open(side, "wb") as handle:
        _write_lines(handle, [orjson.dumps(asdict(user)) for user in log.truth])
    return side


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand."""
    parser = subparsers.add_parser(
        "generate", help="write a deterministic synthetic clickstream with personas",
        description=__doc__.split("\n\n>>>")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--users", type=int, default=1000, metavar="U", help="users (default 1000)")
    parser.add_argument("--events", type=int, default=100000, metavar="N",
                        help="lines, malformed included (default 100000)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE.jsonl",
                        help="output file; a .gz suffix writes gzip; truth goes to FILE.truth.jsonl")
    parser.add_argument("--malformed-rate", type=float, default=0.005, metavar="R",
                        help="share of malformed lines (default 0.005)")
    parser.add_argument("--start", type=_parse_start, default=DEFAULT_START, metavar="ISO",
                        help="start of the period, ISO-8601, UTC if no offset (default 2024-01-01T00:00:00Z)")
    parser.add_argument("--days", type=float, default=60.0, metavar="D",
                        help="length of the period in days (default 60)")
    parser.add_argument("--arrival-jitter", type=float, default=0.0, metavar="SECONDS",
                        help="write lines in order of event time plus a uniform delay in [0, SECONDS); "
                             "no event comes after one more than SECONDS younger (default 0: sorted)")
    parser.set_defaults(func=_cmd_generate)


def _parse_start(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date-time: {text!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _cmd_generate(args: argparse.Namespace) -> int:
    try:
        log = generate(args.users, args.events, args.seed, start=args.start, days=args.days,
                       malformed_rate=args.malformed_rate, arrival_jitter_s=args.arrival_jitter)
    except ValueError as exc:
        print(f"segstream generate: {exc}", file=sys.stderr)
        return 2
    try:
        side = write_log(log, args.out)
    except OSError as exc:
        print(f"segstream generate: cannot write {args.out}: {exc}", file=sys.stderr)
        return 2
    print(f"generated {len(log.lines)} events ({log.malformed} malformed) for {len(log.truth)} users "
          f"-> {args.out} (ground truth: {side})")
    return 0


_SECONDS = [f"{ms // 1000:02d}.{ms % 1000:03d}Z" for ms in range(60_000)]
_MINUTES: dict[int, str] = {}


def _iso(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the parser's and ``iso_utc``'s format).

    >>> _iso(1704067200123)
    '2024-01-01T00:00:00.123Z'
    """
    minute, rest = divmod(ms, 60_000)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        moment = _EPOCH + timedelta(minutes=minute)
        prefix = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
                  f"{moment.hour:02d}:{moment.minute:02d}:")
        _MINUTES[minute] = prefix
    return prefix + _SECONDS[rest]


def _write_lines(handle: Any, lines: list[bytes], chunk: int = 20000) -> None:
    for i in range(0, len(lines), chunk):
        part = lines[i : i + chunk]
        handle.write(b"\n".join(part) + b"\n")


def _cumulative(weights: tuple[float, ...] | list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _pick(rng: random.Random, options: tuple[str, ...], cumulative: list[float]) -> str:
    return options[bisect(cumulative, rng.random() * cumulative[-1])]


def _catalog(rng: random.Random) -> list[tuple[dict[str, Any], float]]:
    """Products sorted by price: (``Product Viewed`` properties, price)."""
    items = []
    for i in range(_N_PRODUCTS):
        category = _CATEGORIES[i % len(_CATEGORIES)][0]
        price = round(min(900.0, max(2.0, rng.lognormvariate(3.4, 0.9))), 2)
        items.append((price, i, category))
    items.sort()
    return [({"product_id": f"p{i:04d}", "category": category, "price": price}, price)
            for price, i, category in items]


def _users(rng: random.Random, users: int) -> list[_User]:
    """Personas in their exact shares (largest remainder), shuffled; ~10 % anonymous."""
    shares = [_PERSONAS[name].share * users for name in PERSONAS]
    counts = [int(share) for share in shares]
    by_remainder = sorted(range(len(PERSONAS)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: users - sum(counts)]:
        counts[i] += 1
    personas = [name for name, count in zip(PERSONAS, counts, strict=True) for _ in range(count)]
    rng.shuffle(personas)
    anonymous = set(rng.sample(range(users), round(users * ANONYMOUS_SHARE)))
    people = []
    for i, persona in enumerate(personas):
        bits = rng.getrandbits(128)
        anonymous_id = f"{bits:032x}"
        anonymous_id = (f"{anonymous_id[:8]}-{anonymous_id[8:12]}-4{anonymous_id[13:16]}-"
                        f"a{anonymous_id[17:20]}-{anonymous_id[20:]}")
        weight = _PERSONAS[persona].activity * rng.lognormvariate(0.0, 1.1)
        is_anonymous = i in anonymous
        people.append(_User(i + 1, persona, is_anonymous, None if is_anonymous else f"u{i + 1}",
                            anonymous_id, weight))
    return people


def _allocate(rng: random.Random, people: list[_User], total: int) -> list[int]:
    """Split ``total`` events over users: a floor each, the rest by weight (largest remainder).

    The floor (up to 8 content events, plus ``Signed Up`` and ``identify`` for
    identified users) keeps most users' behaviour readable; the log-normal
    weights on the rest make a few users far more active than most.
    """
    floor = max(1, min(8, round(0.4 * total / len(people))))
    floors = [floor if user.anonymous else floor + 2 for user in people]
    if total < sum(floors):
        floors = [1 if user.anonymous else 3 for user in people]
    if total < sum(floors):
        counts = []
        for floor in floors:
            counts.append(min(floor, total))
            total -= counts[-1]
        return counts
    extra = total - sum(floors)
    weight_sum = sum(user.weight for user in people)
    quotas = [extra * user.weight / weight_sum for user in people]
    counts = [floor + int(quota) for floor, quota in zip(floors, quotas, strict=True)]
    left = total - sum(counts)
    by_remainder = sorted(range(len(people)), key=lambda i: (int(quotas[i]) - quotas[i], i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return counts


def _merge(
    sessions: list[list[int]], gaps: list[list[int]], target: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Join consecutive sessions into ``target`` sessions, one minute between the joined parts."""
    n = len(sessions)
    merged_sessions: list[list[int]] = []
    merged_gaps: list[list[int]] = []
    for group in range(target):
        first, stop = group * n // target, (group + 1) * n // target
        acts, group_gaps = list(sessions[first]), list(gaps[first])
        for i in range(first + 1, stop):
            acts.extend(sessions[i])
            group_gaps.append(_MERGE_GAP_MS)
            group_gaps.extend(gaps[i][1:])
        merged_sessions.append(acts)
        merged_gaps.append(group_gaps)
    return merged_sessions, merged_gaps


class _Writer:
    """Builds and serializes one user's events at a time into ``stamps`` / ``lines``."""

    def __init__(self, rng: random.Random, seed: int, start_ms: int, span_ms: int,
                 catalog: list[tuple[dict[str, Any], float]]) -> None:
        self.rng = rng
        self.seed = seed
        self.start_ms = start_ms
        self.span_ms = span_ms
        self.catalog = catalog
        self.stamps: list[int] = []
        self.lines: list[bytes] = []
        self._country_cum = _cumulative(_COUNTRY_WEIGHTS)
        self._cum = {
            name: (_cumulative(p.devices), _cumulative(p.sources), _cumulative(p.pages), _cumulative(p.plans))
            for name, p in _PERSONAS.items()
        }

    def user(self, user: _User, persona: _Persona, count: int) -> None:
        rng = self.rng
        identified = not user.anonymous and count >= 3
        content = count - 2 if identified else count

        # Per-user jitter of the persona: same kind of behaviour, different amounts.
        mix = _cumulative([w * rng.lognormvariate(0.0, 0.25) for w in persona.actions])
        p_checkout = min(0.97, persona.p_checkout * rng.lognormvariate(0.0, 0.3))
        p_order = min(0.97, persona.p_order * rng.lognormvariate(0.0, 0.2))
        session_len = max(1.5, persona.session_len * rng.lognormvariate(0.0, 0.25))

        # Sessions: sizes, actions, in-session gaps (ms; the first is 0).
        n = max(1, min(content, round(content / session_len)))
        sizes = [1] * n
        for _ in range(content - n):
            sizes[int(rng.random() * n)] += 1
        sessions = [self._actions(size, mix, persona.landing, p_checkout, p_order) for size in sizes]
        if identified:
            where = 0 if rng.random() < 0.5 else int(rng.random() * n)
            acts = sessions[where]
            at = int(rng.random() * (len(acts) + 1))
            acts[at:at] = [_SIGNUP, _IDENTIFY]
        gaps = [self._gaps(acts) for acts in sessions]

        # The user's active window within the period, in ms from start.
        span = self.span_ms
        if persona.churns:
            lo = int(span * 0.15 * rng.random())
            hi = int(span * (0.3 + 0.3 * rng.random()))
        else:
            lo = int(span * 0.3 * rng.random())
            hi = span - 1
        window = hi - lo
        durations = [sum(g) for g in gaps]
        free = window - sum(durations) - (len(sessions) - 1) * _SESSION_GAP_MS
        if free < 0 and len(sessions) > 1:  # a short period: fewer, longer sessions
            merges = min(len(sessions) - 1, -(free // (_SESSION_GAP_MS - _MERGE_GAP_MS)))
            sessions, gaps = _merge(sessions, gaps, len(sessions) - merges)
            durations = [sum(g) for g in gaps]
            free += merges * (_SESSION_GAP_MS - _MERGE_GAP_MS)
        if free < 0:  # one session longer than the window: squeeze it
            factor = window / durations[0]
            gaps[0] = [int(g * factor) for g in gaps[0]]
            free = window - sum(gaps[0])
        n = len(sessions)
        if persona.regular:
            slack = [rng.random()] + [0.6 + 0.8 * rng.random() for _ in range(n - 1)] + [rng.random()]
        else:
            slack = [rng.expovariate(1.0) for _ in range(n + 1)]
        if not persona.churns:
            slack[-1] *= 0.3  # active users keep coming back until the end of the period
        scale = free / sum(slack) if sum(slack) > 0 else 0.0
        parts = [int(s * scale) for s in slack]

        self._emit(user, persona, sessions, gaps, parts, self.start_ms + lo)

    def _actions(self, size: int, mix: list[float], landing: float, p_checkout: float,
                 p_order: float) -> list[int]:
        rng = self.rng
        funnel = 0
        if size >= 4 and rng.random() < p_checkout:
            funnel = 2 if rng.random() < p_order else 1
        total = mix[-1]
        acts = [_PAGE] if rng.random() < landing else []
        for _ in range(size - funnel - len(acts)):
            acts.append(bisect(mix, rng.random() * total))
        if funnel:
            if _ADD not in acts:
                acts[-1] = _ADD
            acts.append(_CHECKOUT)
            if funnel == 2:
                acts.append(_ORDER)
        return acts

    def _gaps(self, acts: list[int]) -> list[int]:
        rng = self.rng
        gaps = [0]
        for i in range(1, len(acts)):
            if acts[i] == _IDENTIFY:
                gaps.append(1000 + int(2000 * rng.random()))
            else:
                gaps.append(2000 + min(298_000, int(rng.expovariate(1 / 40_000))))
        return gaps

    def _emit(self, user: _User, persona: _Persona, sessions: list[list[int]], gaps: list[list[int]],
              parts: list[int], t: int) -> None:
        rng, catalog, iso = self.rng, self.catalog, _iso
        stamps, lines, dumps, newline = self.stamps, self.lines, orjson.dumps, orjson.OPT_APPEND_NEWLINE
        devices_cum, sources_cum, pages_cum, plans_cum = self._cum[user.persona]
        n_products = len(catalog)
        exponent = persona.price_exponent
        user_id, anonymous_id, number = user.user_id, user.anonymous_id, user.number
        location = {"country": _pick(rng, _COUNTRIES, self._country_cum)}
        home_device = _pick(rng, _DEVICES, devices_cum)
        message_prefix = f"g{self.seed}-u{number}-e"
        k = 0
        t += parts[0]
        for s, (acts, session_gaps) in enumerate(zip(sessions, gaps, strict=True)):
            device = home_device if rng.random() < 0.85 else _pick(rng, _DEVICES, devices_cum)
            context = {"device": {"type": device}, "location": location,
                       "campaign": {"source": _pick(rng, _SOURCES, sources_cum)}}
            cart_id, order_id = f"c{number}-{s}", f"o{number}-{s}"
            cart: list[tuple[float, int]] = []
            last_viewed = -1
            for act, gap in zip(acts, session_gaps, strict=True):
                t += gap
                doc: dict[str, Any]
                body_key = "properties"
                body: dict[str, Any]
                if act == _PAGE:
                    name, path = _PAGES[bisect(pages_cum, rng.random() * pages_cum[-1])]
                    doc = {"type": "page", "name": name}
                    body = {"path": path}
                elif act == _VIEW:
                    last_viewed = int(n_products * rng.random() ** exponent)
                    doc = {"type": "track", "event": "Product Viewed"}
                    body = catalog[last_viewed][0]
                elif act == _SEARCH:
                    terms = _CATEGORIES[int(rng.random() * len(_CATEGORIES))][1]
                    query = persona.query_prefixes[int(rng.random() * len(persona.query_prefixes))]
                    doc = {"type": "track", "event": "Products Searched"}
                    body = {"query": query + terms[int(rng.random() * len(terms))]}
                elif act == _ADD:
                    if last_viewed < 0 or rng.random() < 0.3:
                        last_viewed = int(n_products * rng.random() ** exponent)
                    product, price = catalog[last_viewed]
                    quantity = 1 + int(rng.random() * persona.max_quantity)
                    cart.append((price, quantity))
                    doc = {"type": "track", "event": "Product Added"}
                    body = {**product, "quantity": quantity, "cart_id": cart_id}
                elif act == _CART:
                    doc = {"type": "track", "event": "Cart Viewed"}
                    body = {"cart_id": cart_id, "quantity": sum(q for _, q in cart)}
                elif act == _CHECKOUT:
                    # ``value``, not ``revenue``: only Order Completed carries revenue.
                    doc = {"type": "track", "event": "Checkout Started"}
                    body = {"order_id": order_id, "value": round(sum(p * q for p, q in cart), 2),
                            "quantity": sum(q for _, q in cart), "currency": "USD"}
                elif act == _ORDER:
                    doc = {"type": "track", "event": "Order Completed"}
                    body = {"order_id": order_id, "revenue": round(sum(p * q for p, q in cart), 2),
                            "quantity": sum(q for _, q in cart), "currency": "USD"}
                    cart = []
                elif act == _SIGNUP:
                    doc = {"type": "track", "event": "Signed Up"}
                    body = {"method": "email"}
                else:  # _IDENTIFY
                    doc = {"type": "identify"}
                    body_key, body = "traits", self._traits(user, plans_cum)
                if user_id is not None:
                    doc["userId"] = user_id
                doc["anonymousId"] = anonymous_id
                doc["messageId"] = f"{message_prefix}{k}"
                doc["timestamp"] = iso(t)
                doc[body_key] = body
                doc["context"] = context
                stamps.append(t)
                # Slicing off the newline copies the line into an exact-size object and frees
                # orjson's 1 KiB buffer at once: keeping those buffers makes 1M lines 3x slower.
                lines.append(dumps(doc, option=newline)[:-1])
                k += 1
            t += _SESSION_GAP_MS + parts[s + 1]

    def _traits(self, user: _User, plans_cum: list[float]) -> dict[str, str]:
        rng = self.rng
        first = _FIRST_NAMES[int(rng.random() * len(_FIRST_NAMES))]
        last = _LAST_NAMES[int(rng.random() * len(_LAST_NAMES))]
        return {"email": f"{first.lower()}.{user.user_id}@example.com", "name": f"{first} {last}",
                "plan": _pick(rng, _PLANS, plans_cum)}


def _add_malformed(rng: random.Random, seed: int, count: int, stamps: list[int], lines: list[bytes],
                   start_ms: int) -> None:
    """Append ``count`` broken copies of random valid lines (kinds cycled, then shuffled)."""
    if count == 0:
        return
    kinds = [MALFORMED_KINDS[j % len(MALFORMED_KINDS)] for j in range(count)]
    rng.shuffle(kinds)
    n_valid = len(lines)
    for j, kind in enumerate(kinds):
        if n_valid:
            source = int(rng.random() * n_valid)
            doc = orjson.loads(lines[source])
            stamp = stamps[source]
        else:  # every line is malformed: break a minimal page call
            doc = {"type": "page", "name": "Home", "anonymousId": f"g{seed}-anonymous",
                   "timestamp": _iso(start_ms),
                   "properties": {"path": "/"}}
            stamp = start_ms
        doc["messageId"] = f"g{seed}-bad-{j}"
        if kind == "truncated":
            raw = orjson.dumps(doc)
            line = raw[: 1 + int(rng.random() * (len(raw) - 2))]
        elif kind == "array":
            line = orjson.dumps([doc])
        else:
            if kind == "missing_ids":
                doc.pop("userId", None)
                doc.pop("anonymousId", None)
            elif kind == "missing_timestamp":
                del doc["timestamp"]
            elif kind == "bad_timestamp":
                doc["timestamp"] = _BAD_TIMESTAMPS[int(rng.random() * len(_BAD_TIMESTAMPS))]
            elif kind == "properties_list":
                doc["properties"] = list((doc.get("properties") or {"path": "/"}).items())
            else:  # track_without_event
                doc["type"] = "track"
                doc.pop("event", None)
            line = orjson.dumps(doc)
        stamps.append(stamp)
        lines.append(line)

"""Redis: the profile hashes and member sets that personalization services read.

Key layout (prefix configurable, default ``seg:``), written only here:

- ``{prefix}user:{user_id}``: hash of the profile (``journey``, ``segments``,
  ``version``, ``updated_at`` and the headline features).
- ``{prefix}members:{segment}``: set of the user ids currently in ``segment``.
- ``{prefix}model``: hash of the models' current ``model_version``, the
  ``event_time`` it was made at and a ``summary`` (JSON: quality, cluster
  descriptions).
- ``{prefix}cluster:{id}``: hash of one behavioural cluster: ``description``
  (e.g. ``high search_share, low order_value``), ``centre`` (JSON, in
  standard deviations from the mean) and ``model_version``.
- ``{prefix}population``: hash of the population statistics rules read, one
  field per feature (JSON: ``users``, ``mean``, ``std``, ``p50``, ``p90``,
  ``p99``), as of the latest exchange between processes.
- ``{prefix}population:{process}``: each process's own aggregates (JSON), which
  the others add to theirs; it expires when its process stops refreshing it.
- ``{prefix}population-processes``: sorted set of the processes publishing
  aggregates, scored by when theirs expire (ms since the epoch).

Writes go through one Lua script per user, batched in one pipeline per sink
batch. The script applies a profile only if ``(version, events_total)`` is
greater than what is stored (compared exactly, as decimal integers), and moves
the user's memberships to what the new profile lists. An eviction leaves every
set the stored profile lists and deletes the hash, unless a newer version is
stored. So a replay after a crash (Bytewax is at-least-once) never moves a
profile backwards, and whatever a replay decides, a user is in
``members:{segment}`` exactly when their stored profile lists the segment.

>>> RedisLayout("seg:").user("u1"), RedisLayout("seg:").members("journey:decision")
('seg:user:u1', 'seg:members:journey:decision')
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from segstream.operators.events import iso_utc
from segstream.operators.models import ModelEvent
from segstream.operators.user import UserUpdate

T = TypeVar("T")

SINGLE_VALUED_FIELDS = {"journey": "journey", "cluster": "cluster", "churn": "churn_band"}
"""Profile field holding the value of each single-valued kind (segment ``kind:value``)."""
RULES_FIELD = "segments"
"""Profile field holding the user's rule segments (a JSON list of bare names)."""

# KEYS[1] = profile hash. ARGV[1] = version, ARGV[2] = events_total (both decimal
# integers), ARGV[3] = "p" (write the profile) or "e" (the user was evicted:
# delete it), ARGV[4] = the profile's fields as a JSON object of strings,
# ARGV[5] = updated_at ("" for none), ARGV[6] = the prefix of member-set keys,
# ARGV[7] = user id.
#
# Membership follows the profile, never the changes: when a newer profile is
# written, the user leaves the sets of what the stored profile lists and the new
# one does not (rule segments in RULES_FIELD, one value per single-valued kind)
# and enters the sets of what only the new one lists; an eviction leaves every
# set the stored profile lists, then deletes it. So after any interleaving of
# writes, replays that decided otherwise (a model output, a population
# statistic) and evictions, a user is in a set if and only if their stored
# profile lists it. A profile without a field (an older layout) leaves that
# field's memberships alone. The sets are keys not in KEYS, which standalone
# Redis allows (not Redis Cluster). One JSON argument instead of a hundred
# field/value arguments: packing arguments is most of a client's cost per user.
#
# Versions are compared as decimal strings, exactly: Lua numbers are doubles,
# which tell 2^53 and 2^53 + 1 apart no more.
_APPLY_UPDATE = """
local function newer(a, b)
  if not b then return true end
  if #a ~= #b then return #a > #b end
  return a > b
end
local stored = redis.call('HMGET', KEYS[1], 'version', 'events_total', 'RULES_FIELD', SINGLE_FIELDS)
local v, n = ARGV[1], ARGV[2]
local members, user = ARGV[6], ARGV[7]
local function listed(text)
  local out = {}
  if text and text ~= '' then
    for _, name in ipairs(cjson.decode(text)) do out[name] = true end
  end
  return out
end
if ARGV[3] == 'e' then
  if stored[1] and newer(stored[1], v) then
    return 0
  end
  for name in pairs(listed(stored[3])) do
    redis.call('SREM', members .. name, user)
  end
  for i, kind in ipairs(SINGLE_KINDS) do
    local held = stored[3 + i]
    if held and held ~= '' then
      redis.call('SREM', members .. kind .. ':' .. held, user)
    end
  end
  redis.call('DEL', KEYS[1])
  return 1
end
if not (newer(v, stored[1]) or (v == stored[1] and newer(n, stored[2]))) then
  return 0
end
local fields = cjson.decode(ARGV[4])
if fields['RULES_FIELD'] ~= nil then
  local old, new = listed(stored[3]), listed(fields['RULES_FIELD'])
  for name in pairs(old) do
    if not new[name] then redis.call('SREM', members .. name, user) end
  end
  for name in pairs(new) do
    if not old[name] then redis.call('SADD', members .. name, user) end
  end
end
for i, kind in ipairs(SINGLE_KINDS) do
  local new, held = fields[SINGLE_FIELD_NAMES[i]], stored[3 + i]
  if new ~= nil and new ~= held then
    if held and held ~= '' then
      redis.call('SREM', members .. kind .. ':' .. held, user)
    end
    if new ~= '' then
      redis.call('SADD', members .. kind .. ':' .. new, user)
    end
  end
end
local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
if ARGV[5] ~= '' then
  flat[#flat + 1] = 'updated_at'
  flat[#flat + 1] = ARGV[5]
end
if #flat > 0 then
  redis.call('HSET', KEYS[1], unpack(flat))
end
return 1
"""
_SINGLE = sorted(SINGLE_VALUED_FIELDS.items())
_APPLY_UPDATE = (
    "local SINGLE_KINDS = {" + ", ".join(f"'{kind}'" for kind, _ in _SINGLE) + "}\n"
    + "local SINGLE_FIELD_NAMES = {" + ", ".join(f"'{f}'" for _, f in _SINGLE) + "}\n"
    + _APPLY_UPDATE.replace("SINGLE_FIELDS", ", ".join(f"'{f}'" for _, f in _SINGLE))
    .replace("RULES_FIELD", RULES_FIELD)
)


@dataclass(frozen=True, slots=True)
class RedisLayout:
    """Names of segstream's Redis keys under one prefix."""

    prefix: str = "seg:"

    def user(self, user_id: str) -> str:
        """Key of a user's profile hash."""
        return f"{self.prefix}user:{user_id}"

    def members(self, segment: str) -> str:
        """Key of a segment's member set."""
        return f"{self.prefix}members:{segment}"

    def user_pattern(self) -> str:
        """SCAN pattern matching every profile hash."""
        return f"{self.prefix}user:*"

    def model(self) -> str:
        """Key of the models' hash: version, quality, cluster descriptions."""
        return f"{self.prefix}model"

    def cluster(self, cluster_id: str) -> str:
        """Key of one cluster's hash: its description and centre."""
        return f"{self.prefix}cluster:{cluster_id}"

    def population(self, process: str | None = None) -> str:
        """Key of the population statistics, or of one process's aggregates."""
        return f"{self.prefix}population" if process is None else f"{self.prefix}population:{process}"

    def population_processes(self) -> str:
        """Key of the sorted set of processes with aggregates (score: when theirs expire, ms)."""
        return f"{self.prefix}population-processes"


# KEYS[1] = the models' hash, KEYS[2..] = cluster hashes. ARGV[1] = model
# version, ARGV[2] = the models' fields as a JSON object, ARGV[3..] = each
# cluster's fields (aligned with KEYS[2..]). Written only if the version is
# newer than the stored one.
_APPLY_MODEL = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'model_version')) or -1
if tonumber(ARGV[1]) <= cur then
  return 0
end
for k = 1, #KEYS do
  local flat = {}
  for name, value in pairs(cjson.decode(ARGV[k + 1])) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  redis.call('HSET', KEYS[k], unpack(flat))
end
return 1
"""


class FailureReport:
    """Tells a callback of failures (their text) and of the first success after them (``None``)."""

    __slots__ = ("_callback", "_failing")

    def __init__(self, callback: Callable[[str | None], None] | None) -> None:
        self._callback = callback
        self._failing = False

    def failed(self, problem: str) -> None:
        """Report a failure."""
        self._failing = True
        if self._callback is not None:
            self._callback(problem)

    def succeeded(self) -> None:
        """Report a success, if it ends failures."""
        if self._failing:
            self._failing = False
            if self._callback is not None:
                self._callback(None)


class DeadlineRetry(Retry):
    """Retry connection errors and timeouts with backoff until ``deadline_s`` after the first.

    redis-py's own ``Retry`` counts attempts; with command timeouts an attempt
    can take a whole timeout, so a count would stretch the give-up to minutes.
    ``report`` hears each failure.
    """

    def __init__(self, deadline_s: float, report: FailureReport | None = None) -> None:
        super().__init__(ExponentialBackoff(cap=2.0, base=0.05), -1)
        self._deadline_s = deadline_s
        self._report = report or FailureReport(None)

    def __deepcopy__(self, memo: dict[int, Any]) -> DeadlineRetry:
        # redis-py copies a client's Retry into each connection; the report is shared.
        copied = DeadlineRetry(self._deadline_s, self._report)
        copied.update_supported_errors(list(self._supported_errors))
        return copied

    def call_with_retry(self, do: Callable[[], T], fail: Callable[..., Any], *args: Any,
                        **kwargs: Any) -> T:
        """Run ``do``, retrying what fails until the deadline (see the class doc)."""
        started = time.monotonic()
        report = self._report

        def fail_or_give_up(error: Exception, *rest: Any) -> None:
            fail(error, *rest)
            report.failed(f"{type(error).__name__}: {error}")
            if time.monotonic() - started >= self._deadline_s:
                raise error

        # Success is the store's to report: redis-py retries connects through here
        # too, and a TCP connect to a paused server succeeds (the kernel accepts it).
        return super().call_with_retry(do, fail_or_give_up, *args, **kwargs)


class PendingApply:
    """Script calls sent to Redis whose replies are not read yet (see :meth:`RedisStore.send_apply`).

    If the connection fails, or Redis lost the script (a restart), before the
    replies are read, :meth:`result` applies the updates again the blocking
    way, with the store's retries: the script is version-guarded, so updates
    that did land are skipped the second time.
    """

    def __init__(self, store: RedisStore, updates: Sequence[UserUpdate], updated_at: str | None,
                 pool: Any, conn: Any, count: int) -> None:
        # ``conn``: the pool's connection the calls went out on (None: sending failed).
        self._store, self._updates, self._updated_at = store, updates, updated_at
        self._pool, self._conn, self._count = pool, conn, count

    def result(self) -> int:
        """Read the replies; return how many profile hashes were written or deleted."""
        if not self._count:
            return 0
        conn, self._conn = self._conn, None
        if conn is None:
            return self._store.apply(self._updates, updated_at=self._updated_at)
        pool = self._pool
        try:
            written = sum(int(conn.read_response()) for _ in range(self._count))
        except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoScriptError) as exc:
            conn.disconnect()
            self._store.failures.failed(f"{type(exc).__name__}: {exc}")
            return self._store.apply(self._updates, updated_at=self._updated_at)
        except BaseException:
            conn.disconnect()  # replies behind the failed one are still unread
            raise
        finally:
            pool.release(conn)
        self._store.failures.succeeded()
        return written


class RedisStore:
    """Writes profile updates and memberships; reads profiles back.

    Args:
        client: a ``redis.Redis`` client (``decode_responses`` either way).
        layout: the key layout.
        failures: hears each failure and the success after failures, for the
            worker's health (:meth:`from_url` wires it).

    """

    def __init__(self, client: redis.Redis, layout: RedisLayout,
                 failures: FailureReport | None = None) -> None:
        self._client = client
        self._layout = layout
        self.failures = failures or FailureReport(None)
        """Where the store's failures and recoveries are reported (the worker's health)."""
        self._apply = client.register_script(_APPLY_UPDATE)
        self._apply_model = client.register_script(_APPLY_MODEL)

    @classmethod
    def from_url(cls, url: str, prefix: str = "seg:", *, retry_s: float = 30.0,
                 timeout_s: float = 5.0, on_failure: Callable[[str | None], None] | None = None,
                 ) -> RedisStore:
        """Connect to ``url`` (``redis://host:port/db``).

        Every connect and command times out after ``timeout_s``, so a Redis
        that hangs (paused, a full network buffer) fails like one that refuses.
        Connection errors and timeouts are retried with exponential backoff
        until ``retry_s`` seconds have passed since the first failure (a
        failover, a restart), then raised, which stops the worker before its
        snapshot moves past unwritten output. Retrying is safe because writes
        are version-guarded (idempotent). ``on_failure`` hears each failure
        (its text) and each success after one (``None``): the worker's health.
        """
        failures = FailureReport(on_failure)
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            retry=DeadlineRetry(retry_s, failures),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_keepalive=True,
        )
        return cls(client, RedisLayout(prefix), failures)

    @property
    def layout(self) -> RedisLayout:
        """The key layout this store writes."""
        return self._layout

    def apply(self, updates: Sequence[UserUpdate], *, updated_at: str | None = None) -> int:
        """Apply updates (profile fields, and the memberships they list) in one pipeline.

        Args:
            updates: at most one per user gives the fewest script calls.
            updated_at: written as the profile's ``updated_at`` field when given.

        Returns:
            How many profile hashes were written or deleted (stale ones are skipped).

        """
        if not updates:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for update in updates:
            keys, args = self._update_call(update, updated_at)
            self._apply(keys=keys, args=args, client=pipe)
        written = sum(int(x) for x in pipe.execute())
        self.failures.succeeded()
        return written

    def send_apply(self, updates: Sequence[UserUpdate], *, updated_at: str | None = None
                   ) -> PendingApply:
        """Send :meth:`apply`'s script calls and return without reading the replies.

        Redis runs them while the caller goes on; :meth:`PendingApply.result`
        reads the replies. Until then the store holds one connection for it.
        """
        commands = []
        for update in updates:
            keys, args = self._update_call(update, updated_at)
            commands.append(("EVALSHA", self._apply.sha, len(keys), *keys, *args))
        pool = self._client.connection_pool
        if not commands:
            return PendingApply(self, updates, updated_at, pool, None, 0)
        conn: Any = pool.get_connection()  # redis-py leaves Connection untyped
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()
            pool.release(conn)
            conn = None  # result() applies them the blocking way
        return PendingApply(self, updates, updated_at, pool, conn, len(commands))

    def _update_call(self, update: UserUpdate, updated_at: str | None
                     ) -> tuple[list[str], list[Any]]:
        """Return the update script's keys and arguments for one update."""
        keys = [self._layout.user(update.user_id)]
        args: list[Any] = [
            update.version, update.events_total, "e" if update.evicted else "p",
            b"{}" if update.evicted else update.profile_json,
            "" if updated_at is None or update.evicted else updated_at,
            self._layout.members(""), update.user_id,
        ]
        return keys, args

    def apply_model(self, events: Sequence[ModelEvent]) -> int:
        """Write the newest ``version`` event: the models' hash and one hash per cluster.

        A write never moves ``model_version`` back (a replay after a crash is
        harmless). Returns how many versions were written.
        """
        versions = [e for e in events if e.kind == "version"]
        if not versions:
            return 0
        newest = max(versions, key=lambda e: e.model_version)
        detail = {k: v for k, v in newest.detail.items() if k != "predictor"}
        fields = {
            "model_version": str(newest.model_version),
            "event_time": iso_utc(newest.event_time),
            "summary": orjson.dumps(detail).decode(),
        }
        clusters = {
            self._layout.cluster(cid): {
                "description": text,
                "centre": orjson.dumps(detail.get("centres", {}).get(cid, {})).decode(),
                "model_version": str(newest.model_version),
            }
            for cid, text in detail.get("clusters", {}).items()
        }
        written = self._apply_model(
            keys=[self._layout.model(), *clusters],
            args=[newest.model_version, orjson.dumps(fields),
                  *(orjson.dumps(c) for c in clusters.values())],
        )
        return int(written)

    def model_info(self) -> dict[str, str]:
        """Return the models' hash (empty before the first version)."""
        return {_text(k): _text(v) for k, v in self._client.hgetall(self._layout.model()).items()}

    def cluster_info(self, cluster_id: str) -> dict[str, str]:
        """Return one cluster's hash: ``description``, ``centre`` (JSON), ``model_version``."""
        raw = self._client.hgetall(self._layout.cluster(cluster_id))
        return {_text(k): _text(v) for k, v in raw.items()}

    def profile(self, user_id: str) -> dict[str, str]:
        """Return a user's profile hash (empty if unknown)."""
        return {_text(k): _text(v) for k, v in self._client.hgetall(self._layout.user(user_id)).items()}

    def members(self, segment: str) -> set[str]:
        """Return the ids of the users in ``segment``."""
        return {_text(m) for m in self._client.smembers(self._layout.members(segment))}

    def user_ids(self) -> list[str]:
        """Return every user with a profile (SCAN; for tools and tests, not hot paths)."""
        start = len(self._layout.user(""))
        return sorted(
            _text(k)[start:] for k in self._client.scan_iter(self._layout.user_pattern(), count=1000)
        )

    def segments(self) -> dict[str, set[str]]:
        """Return every member set, by segment (SCAN; for tools and tests)."""
        start = len(self._layout.members(""))
        pattern = self._layout.members("*")
        return {
            _text(k)[start:]: self.members(_text(k)[start:])
            for k in self._client.scan_iter(pattern, count=1000)
        }

    def exchange_population(self, process: str, partial: dict[str, Any], ttl_s: float
                            ) -> list[dict[str, Any]]:
        """Publish this process's aggregates (expiring after ``ttl_s``); return the others'.

        The processes are found through a sorted set, not by scanning keys: the
        keyspace holds every user's hash, and a scan of a million keys every few
        seconds costs Redis and the worker far more than the exchange itself.
        """
        own = self._layout.population(process)
        index = self._layout.population_processes()
        ttl_ms = max(1, int(ttl_s * 1000))
        now_ms = int(time.time() * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.set(own, orjson.dumps(partial), px=ttl_ms)
        pipe.zadd(index, {process: now_ms + ttl_ms})
        pipe.zremrangebyscore(index, "-inf", now_ms)  # processes that stopped publishing
        pipe.zrange(index, 0, -1)
        processes = pipe.execute()[-1]
        keys = [self._layout.population(_text(name)) for name in processes
                if _text(name) != process]
        values = self._client.mget(keys) if keys else []
        return [orjson.loads(v) for v in values if v is not None]

    def write_population(self, summary: dict[str, dict[str, float | None]]) -> None:
        """Write the population statistics readers see (``{prefix}population``)."""
        if summary:
            self._client.hset(self._layout.population(),
                              mapping={name: orjson.dumps(stats) for name, stats in summary.items()})

    def population_info(self) -> dict[str, dict[str, float | None]]:
        """Return the population statistics, by feature."""
        raw = self._client.hgetall(self._layout.population())
        return {_text(k): orjson.loads(v) for k, v in raw.items()}

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value

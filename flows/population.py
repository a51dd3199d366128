"""Population statistics across processes: each process adds the others' aggregates to its own.

Every worker of a process updates one shared
:class:`~segstream.operators.population.Population` as its users change, so
within a process the statistics are of all its users, at most 1 % of them
stale. Across processes there is no channel inside the dataflow (Bytewax
dataflows have no cycles), so each process, every ``population_sync_s``:

1. writes its own aggregates to ``{prefix}population:{process}`` in Redis,
   expiring after three intervals (a stopped process drops out);
2. reads the other processes' aggregates and adds them to its own;
3. writes the merged statistics to ``{prefix}population`` for readers, and to
   the ``segstream_population_statistic`` gauges.

So a threshold sees this process's users at most 1 % stale, and the other
processes' users as of at most ``2 * population_sync_s`` ago. Aggregates are
sums, so merging is exact: with every process quiet for an interval, every
process holds the statistics of all users (tested with two processes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis
from segstream.operators.population import Population
from segstream.state.redis import RedisStore

from segstream.config import Config
from segstream.health import request_fatal_stop, supervised
from segstream.metrics import POPULATION_STATISTIC

log = logging.getLogger(__name__)

POPULATION_THREAD = "population sync"


def publish_statistics(population: Population) -> dict[str, dict[str, float | None]]:
    """Set the population gauges from ``population``; return its statistics."""
    summary = population.snapshot()
    for feature, stats in summary.items():
        for statistic, value in stats.items():
            if value is not None:
                POPULATION_STATISTIC.labels(feature, statistic).set(value)
    return summary


class PopulationSync:
    """Exchanges population aggregates with the other processes through Redis, on a thread."""

    def __init__(self, config: Config, population: Population, process: str, *,
                 on_fatal: Callable[[str], None] = request_fatal_stop) -> None:
        """Sync ``population`` as process ``process`` every ``config.population_sync_s``.

        A Redis outage is retried at the next interval for as long as it lasts
        (the statistics only grow staler); anything else kills the thread, and
        ``on_fatal`` stops the worker (non-zero).
        """
        self._config = config
        self._population = population
        self._process = process
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=supervised, args=(POPULATION_THREAD, self._run, on_fatal),
            name="segstream-population-sync", daemon=True)

    def start(self) -> PopulationSync:
        """Start syncing (nothing to do when the population tracks no feature); returns self."""
        if self._population.features:
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop syncing and wait for the thread (its key in Redis expires on its own)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15)

    def sync_once(self, store: RedisStore) -> None:
        """Publish ours, merge theirs, publish the result."""
        interval = self._config.population_sync_s
        others = store.exchange_population(self._process, self._population.partial(), 3 * interval)
        self._population.set_remote(others)
        store.write_population(publish_statistics(self._population))

    def _run(self) -> None:
        config = self._config
        store = RedisStore.from_url(config.redis_url, config.redis_prefix,
                                    retry_s=min(config.outage_give_up_s, config.population_sync_s),
                                    timeout_s=config.redis_timeout_s)
        try:
            while True:
                try:
                    self.sync_once(store)
                except redis.RedisError as exc:  # an outage must not stop the worker: retried
                    log.warning("population statistics: exchange through Redis failed (%s: %s); "
                                "retrying in %g s", type(exc).__name__, exc, config.population_sync_s)
                if self._stop.wait(config.population_sync_s):
                    break
        finally:
            store.close()

"""Small confluent-kafka helpers shared by the sink, the tools and the local services."""

from __future__ import annotations

from typing import Any


def produce_waiting(producer: Any, topic: str, value: bytes | None, key: bytes | None,
                    **extra: Any) -> None:
    """Produce one message, waiting out a full local queue (``BufferError``) by polling.

    ``extra`` goes to ``Producer.produce`` as is (``headers``, ``on_delivery``).
    Other exceptions (e.g. a message over ``message.max.bytes``) propagate.
    """
    while True:
        try:
            producer.produce(topic, value, key, **extra)
            return
        except BufferError:
            producer.poll(0.01)


def find_topic(admin: Any, topic: str, *, timeout: float = 10.0) -> Any | None:
    """Return ``topic``'s metadata from an ``AdminClient``, or ``None`` if it does not exist.

    All topics are listed rather than the one asked for, because a metadata
    request naming a missing topic makes some brokers (Tansu) create it.
    """
    return admin.list_topics(timeout=timeout).topics.get(topic)

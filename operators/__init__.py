"""Units of logic, each testable without Kafka, Redis or Bytewax.

``parse`` turns raw bytes into an ``Event`` or a ``Rejected``; ``taxonomy``
maps event names to semantic roles; ``profile`` keeps per-user features;
``journey`` walks users through phases; ``changes`` serializes membership
changes. Nothing here imports Bytewax, confluent-kafka, redis or os.environ.
"""

"""segstream: real-time behavioural user segmentation on Bytewax.

The package is split the way the dataflow is: ``segstream.flows`` wires,
``segstream.operators`` holds the logic (no Bytewax, Kafka or Redis imports),
``segstream.state`` holds state shapes and stores. ``segstream.config`` is the
one place configuration is read, ``segstream.errors`` the one exception root.
"""

__version__ = "0.1.0"

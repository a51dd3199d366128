"""Dataflow assembly: which operators, in what order, wired to which sources and sinks."""

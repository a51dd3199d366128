"""Shapes of state and where it lives: per-user state, the Redis store/reader."""

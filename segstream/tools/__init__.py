"""The CLI's subcommands: run, demo, generate, replay, lookup (one module each)."""

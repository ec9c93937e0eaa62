"""Stage drivers: turn a params section and the stage's folders into library calls.

Each driver is called by exactly one CLI subcommand; it owns the stage's file layout
(docs/CONVENTIONS.md) and writes its output folder atomically.
"""

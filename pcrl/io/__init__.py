"""Readers and writers by file format, each with its integrity checks."""

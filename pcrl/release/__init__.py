"""A pretrained encoder as a release others can use: its files, config, adaptation plan and card
(written by ``pcrl export``; loaded by :mod:`pcrl.hub`)."""

"""Datasets: registry, download and verification, phantom, resampling, cubes and splits."""

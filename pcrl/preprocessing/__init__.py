"""Preprocessing: resampling, pairs, NCC cubes, splits, radiographs, and their readers."""

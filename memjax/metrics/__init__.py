"""Memorization and diversity metrics: pure, jitted, memory-bounded functions."""

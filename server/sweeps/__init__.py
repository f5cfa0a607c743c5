"""Sweeps: a named set of runs made from presets × override grids × seeds, queued to the agents under a
concurrency cap, cancelled as a whole, and read as one (small multiples, results table, parallel coordinates)."""

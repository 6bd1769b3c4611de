"""The cache lifecycle: retention, the storage budget, garbage collection (tasks.py), run by
the `prune` and `scrub` commands and by the cacher every `[eviction] interval_secs`
(scheduler.py), one process at a time (lock.py)."""

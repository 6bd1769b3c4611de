"""The pull-through logic, free of aiohttp: it returns plain values (`answers`).

- `freshness`: do we ask the upstream? (the one decision, pure)
- `manifests`, `blobs`: the services the handlers call
- `memory`: what a frontend remembers between requests (one bounded LRU)
- `spool`: coalesced blob downloads; `handover`: verified spools to the cacher
- `jobs`: cache jobs enqueued in the background
"""

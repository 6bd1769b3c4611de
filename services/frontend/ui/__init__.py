"""The web UI (`[ui] enabled`): what is cached, how the cache is doing, and acting on it.

- `routes`: the routes and the UI's resources (`setup`, called by the app factory);
- `pages` (HTML, Jinja2 templates in `templates/`) and `api` (JSON) over the same `views`;
- `catalog` (a snapshot of what storage holds), `images` (one image's manifests),
  `status` (upstream health, the queue, usage), `stats` (the sampled counters), `pulls`
  (recent pulls); `visibility` (every access question of the UI), `guard` (cross-site);
- `assets` and `static/`: the CSS, JavaScript and icon, served by the registry itself.
"""

from .routes import setup

__all__ = ["setup"]

"""Shared fixtures: real servers (tests/fixtures/) for every test module."""

pytest_plugins = [
    "tests.fixtures.plugin",
    "tests.fixtures.mirror",
    "tests.fixtures.redis_server",
    "tests.fixtures.s3_server",
    "tests.fixtures.tls",
    "tests.fixtures.browser",
    "tests.fixtures.access",
    "tests.fixtures.hostile_upstream",
]

"""Simple-Registry in Python: a pull-through caching OCI registry.

This folder is the source of the package `simple_registry` (see pyproject.toml); it is
never imported as `services`, where a second copy of every module would live beside the
installed one.
"""

if __name__ != "simple_registry":
    raise ImportError(
        f"import simple_registry, not {__name__}: the services/ folder installs as the "
        "package simple_registry (pip install -e .)"
    )

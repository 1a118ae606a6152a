"""hetagent: compile AI agent workflows onto heterogeneous hardware and run them at the lowest TCO.

The public API (hetagent.api) loads on first use, so light entry points such as
`python -m hetagent.cli calibrate --gpu` on a bare GPU host need none of the compiler's dependencies.
"""
from hetagent.errors import HetagentError  # noqa: F401

__version__ = "0.1.0"


def __getattr__(name):
    import importlib
    api = importlib.import_module("hetagent.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'hetagent' has no attribute '{name}'")


def __dir__():
    import importlib
    api = importlib.import_module("hetagent.api")
    return sorted(set(globals()) | set(api.__all__))

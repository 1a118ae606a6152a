"""hetagent: compile AI agent workflows onto heterogeneous hardware and run them at the lowest TCO."""
from hetagent.api import *  # noqa: F401,F403
from hetagent.api import __all__  # noqa: F401
from hetagent.errors import HetagentError  # noqa: F401

__version__ = "0.1.0"

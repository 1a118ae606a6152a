"""One error family. Every error a user can cause is a HetagentError whose str() is one line they can act on.

The CLI prints str(error) on stderr and exits 1, never a traceback.
"""
from __future__ import annotations


# Control characters and line separators a user's text may carry into a message, escaped so that every
# message stays one line (a node kind of "\n?" once split an error over two lines).
_ESCAPES = {c: f"\\x{c:02x}" for c in range(32)} | {0x7f: "\\x7f", 0x85: "\\x85", 0x2028: "\\u2028",
                                                   0x2029: "\\u2029"} | {10: "\\n", 13: "\\r", 9: " "}


class HetagentError(Exception):
    """Base of every error a user can cause. Its message is one line: control characters are escaped."""

    def __init__(self, *args):
        super().__init__(*(a.translate(_ESCAPES) if isinstance(a, str) else a for a in args))


class InputError(HetagentError):
    """Bad input in a file: says where (file, line, field) and what is wrong."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file:
            where = f"{file}:{line}" if line else f"{file}"
        parts = [p for p in (where, f"field '{field}'" if field else "") if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)


class WorkflowError(InputError):
    """A workflow file or builder call that does not describe a valid workflow."""


class IRError(HetagentError):
    """An IR module that fails verification or cannot be parsed."""


class CatalogError(HetagentError):
    """Unknown device, model or catalog id, or a device option that does not exist."""


class CostModelError(HetagentError):
    """An operator that cannot run on a device option (does not fit, precision missing, ...)."""


class PlacementError(HetagentError):
    """No plan exists; the message says which operator and which bound make it so."""


LIST_SHOWN = 8   # a list in a message shows this many items, then "and N more"


def summarize(items, shown: int = LIST_SHOWN) -> str:
    """'a, b, c', or 'a, b, c, d, e, f, g, h and 41 more': a long list keeps the message one short line."""
    items = [str(i) for i in items]
    if len(items) <= shown:
        return ", ".join(items)
    return f"{', '.join(items[:shown])} and {len(items) - shown} more"


def unknown_choice(what: str, given: str, choices) -> CatalogError:
    """`unknown device 'h900'; choices: a100, h100, ...`"""
    return CatalogError(f"unknown {what} '{given}'; choices: {summarize(sorted(choices), 24)}")

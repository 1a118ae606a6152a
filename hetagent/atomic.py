"""Write a file all or nothing: a temporary file beside the target, renamed over it. An error or an
interrupt leaves the target as it was; the file gets the usual permissions (0666 less the umask)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hetagent.errors import HetagentError


def write_atomic(path: str | Path, data: str | bytes) -> None:
    target = Path(path)
    if target.is_dir():
        raise HetagentError(f"{path}: is a directory; name a file to write")
    if not target.parent.exists():
        raise HetagentError(f"{path}: directory {target.parent} does not exist")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

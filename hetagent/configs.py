"""Where the packaged configuration lives, and which ids it defines.

configs/ sits at the repository root and is shipped with the program; HETAGENT_CONFIG_DIR or the CLI's
--config-dir points elsewhere. This module is below every stage: it finds configuration files and reads them with line numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

from hetagent.guarded import dotted, read_yaml as guarded_read_yaml
from hetagent.errors import InputError

_PACKAGED = Path(__file__).resolve().parent.parent / "configs"


def config_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("HETAGENT_CONFIG_DIR")
    return Path(env) if env else _PACKAGED


def config_path(kind: str, name: str, override=None) -> Path:
    """Path of configs/<kind>/<name>.yaml (kind: devices, models, fleets, tco, workflows)."""
    return config_dir(override) / kind / f"{name}.yaml"


def named_or_path(kind: str, name_or_path, override=None) -> Path:
    """A config given by name (configs/<kind>/<name>.yaml) or by path; unknown names list the choices."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return p
    path = config_path(kind, str(name_or_path), override)
    if not path.is_file():
        from hetagent.errors import unknown_choice
        raise unknown_choice(kind.rstrip("s") if kind != "tco" else "tco config", str(name_or_path),
                             list_ids(kind, override))
    return path


def list_ids(kind: str, override=None) -> list[str]:
    """The ids defined in configs/<kind>/ (file stems, sorted)."""
    folder = config_dir(override) / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


# ---- YAML with line numbers ----------------------------------------------------------------------

def read_yaml(path: str | Path) -> tuple[object, dict[str, int]]:
    """Parse a config file through the guarded reader (hetagent.guarded: size limit, plain data only,
    alias bombs refused before expansion, duplicate keys refused); return (data, {dotted field path:
    1-based line}). Every problem is one InputError naming the file and line."""
    located = guarded_read_yaml(path, "config")
    return located.data, {dotted(p): line for p, line in located.lines.items() if p}


class Where:
    """Where a mapping came from: file, line map and a path prefix (for devices inlined in a fleet)."""

    def __init__(self, file: str | Path, lines: dict[str, int], prefix: str = ""):
        self.file, self.lines, self.prefix = str(file), lines, prefix

    def key(self, fld: str) -> str:
        return f"{self.prefix}.{fld}" if self.prefix and fld else (self.prefix or fld)

    def line(self, fld: str) -> int | None:
        k = self.key(fld)
        while k:
            if k in self.lines:
                return self.lines[k]
            k = k.rsplit(".", 1)[0] if "." in k else ""
        return None

    def error(self, fld: str, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line(fld), field=self.key(fld))

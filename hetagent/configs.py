"""Where the packaged configuration lives, and which ids it defines.

configs/ sits at the repository root and is shipped with the program; HETAGENT_CONFIG_DIR or the CLI's
--config-dir points elsewhere. This module is below every stage: it only finds files, it parses nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent.parent / "configs"


def config_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("HETAGENT_CONFIG_DIR")
    return Path(env) if env else _PACKAGED


def config_path(kind: str, name: str, override=None) -> Path:
    """Path of configs/<kind>/<name>.yaml (kind: devices, models, fleets, tco, workflows)."""
    return config_dir(override) / kind / f"{name}.yaml"


def list_ids(kind: str, override=None) -> list[str]:
    """The ids defined in configs/<kind>/ (file stems, sorted)."""
    folder = config_dir(override) / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []

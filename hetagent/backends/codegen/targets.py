"""Code-generation targets: target strings, device -> targets, and the IREE flags for each.

Target strings:
  llvm-cpu              the host CPU (built and run here)
  llvm-cpu:<cpu>        a CPU's features, e.g. llvm-cpu:sapphirerapids (AMX), llvm-cpu:znver4 (not run here)
  cuda:sm_<NN>          NVIDIA; the bundled IREE compiles sm_75 .. sm_89 (sm_90 and newer: not supported)
  rocm:gfx<NNN>         AMD, e.g. rocm:gfx942 (MI300X)
  vulkan[:<arch>]       SPIR-V for a Vulkan driver; without an arch, IREE's portable default profile
  onnx                  the portable fallback: an ONNX model of the same reference module
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from hetagent.errors import HetagentError

HOST = "llvm-cpu"
ONNX = "onnx"
BACKENDS = ("llvm-cpu", "cuda", "rocm", "vulkan", "onnx")
CUDA_MIN, CUDA_MAX = 75, 89          # what this project promises; IREE 3.13 has no target past sm_89

# device id -> (primary target, whether the device has a Vulkan driver)
DEVICE_TARGETS: dict[str, tuple[str, bool]] = {
    "a100": ("cuda:sm_80", True), "a40": ("cuda:sm_86", True), "a10g": ("cuda:sm_86", True),
    "l4": ("cuda:sm_89", True), "l40s": ("cuda:sm_89", True), "t4": ("cuda:sm_75", True),
    "h100": ("cuda:sm_90", True), "h100-pcie": ("cuda:sm_90", True), "h200": ("cuda:sm_90", True),
    "b200": ("cuda:sm_100", True),
    "mi300x": ("rocm:gfx942", True),
    "gaudi3": ("onnx", False),
    "xeon-sapphirerapids": ("llvm-cpu:sapphirerapids", False),
    "epyc-genoa": ("llvm-cpu:znver4", False),
    "epyc-turin": ("llvm-cpu:znver5", False),
}


@dataclass(frozen=True)
class Target:
    name: str            # the target string as written in the manifest
    backend: str         # llvm-cpu | cuda | rocm | vulkan | onnx
    arch: str | None     # cpu name, sm_NN, gfxNNN, vulkan arch

    @property
    def is_host(self) -> bool:
        return self.name == HOST

    @property
    def iree_backend(self) -> str:
        return {"vulkan": "vulkan-spirv"}.get(self.backend, self.backend)

    def iree_flags(self) -> list[str]:
        if self.backend == "llvm-cpu":
            return [f"--iree-llvmcpu-target-cpu={self.arch or 'host'}"]
        if self.backend == "cuda":
            return [f"--iree-cuda-target={self.arch}"]
        if self.backend == "rocm":
            return [f"--iree-rocm-target={self.arch}"]
        if self.backend == "vulkan":
            return [f"--iree-vulkan-target={self.arch}"] if self.arch else []
        return []

    @property
    def runtime_driver(self) -> str | None:
        return {"llvm-cpu": "local-task", "cuda": "cuda", "rocm": "hip", "vulkan": "vulkan"}.get(self.backend)

    def unsupported(self) -> str | None:
        """Why the bundled compiler cannot produce this target (None when it can)."""
        if self.backend == "cuda":
            sm = int(self.arch[3:])
            if sm > CUDA_MAX:
                return (f"the bundled IREE (iree-base-compiler 3.13) has no CUDA target for {self.arch} "
                        f"(it supports sm_{CUDA_MIN} .. sm_{CUDA_MAX}; sm_90 and newer are not supported)")
        return None


def parse_target(text: str) -> Target:
    """'cuda:sm_80' -> Target; an unknown backend or a malformed arch raises HetagentError."""
    t = str(text).strip()
    backend, _, arch = t.partition(":")
    if backend not in BACKENDS:
        raise HetagentError(f"unknown code-generation target '{t}'; choices: llvm-cpu, llvm-cpu:<cpu> "
                            "(e.g. sapphirerapids, znver4), cuda:sm_<NN>, rocm:gfx<NNN>, vulkan, onnx")
    pattern = {"llvm-cpu": r"[a-z0-9_\-\.]+", "cuda": r"sm_\d{2,3}", "rocm": r"gfx[0-9a-f]{3,4}",
               "vulkan": r"[a-z0-9_]+", "onnx": r"(?!)"}[backend]
    if arch and not re.fullmatch(pattern, arch):
        raise HetagentError(f"malformed target '{t}': expected {backend}:{pattern}")
    if backend in ("cuda", "rocm") and not arch:
        raise HetagentError(f"target '{t}' needs an architecture, e.g. cuda:sm_80 or rocm:gfx942")
    if backend == "llvm-cpu" and arch == "host":
        arch = ""
    return Target(f"{backend}:{arch}" if arch else backend, backend, arch or None)


def device_targets(device: str, catalog: dict | None = None) -> tuple[list[Target], str | None]:
    """The targets for operators placed on `device` (host llvm-cpu not included), and a note when the
    device is unknown to this table."""
    if device in DEVICE_TARGETS:
        primary, vulkan = DEVICE_TARGETS[device]
        out = [parse_target(primary)]
        if vulkan:   # NVIDIA and AMD GPUs have a Vulkan driver: IREE's portable SPIR-V profile
            out.append(parse_target("vulkan"))
        return out, None
    dev = (catalog or {}).get(device)
    if dev is not None and getattr(dev, "kind", None) == "cpu":
        return [parse_target(HOST)], f"no CPU feature target known for '{device}': generic host build"
    return [parse_target(ONNX)], f"no IREE target known for device '{device}': portable ONNX model"

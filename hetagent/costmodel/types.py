"""What the cost model hands to placement: one OpCost per (operator, device option)."""
from __future__ import annotations

from dataclasses import dataclass, field

BOUNDS = ("compute", "memory", "network", "latency")


@dataclass(frozen=True, order=True)
class DeviceOption:
    device: str               # device id, e.g. "h100"
    tp: int = 1               # tensor-parallel degree
    pp: int = 1               # pipeline-parallel degree
    batch: int = 1            # requests served together by one replica
    precision: str = "fp16"

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp

    def label(self) -> str:
        return f"{self.device}/tp{self.tp}/pp{self.pp}/b{self.batch}/{self.precision}"


@dataclass
class OpCost:
    latency_ms: float          # time of one execution of the operator (a whole decode: all its steps)
    throughput_rps: float      # executions per second one replica sustains at this batch
    memory_gb: float           # per device of the replica (1e9 bytes)
    power_w: float             # average draw per device while running
    bound: str                 # one of BOUNDS: the resource that sets latency_ms
    price_per_execution: float = 0.0   # $ charged per execution (hosted APIs, per-token profiles)
    detail: dict = field(default_factory=dict)  # e.g. {"ttft_ms":.., "tbt_ms":.., "flops":.., "bytes":..}
    # How sure (costmodel/uncertainty.py): measured | calibrated | datasheet, and [low, high] ms that the status's
    # cross-validated residuals put around latency_ms (None where nothing was validated).
    calibration_status: str = "datasheet"
    latency_interval_ms: list | None = None

"""A tracked run's energy, measured where the machine can say it, and the hardware it ran on.

Annex XI asks for the energy used in training with the method by which it was found. In order of
preference, for the devices the watched model's parameters live on:

1. **NVML** (``pynvml``, from the ``nvidia-ml-py`` package), on CUDA GPUs: each GPU's total-energy
   counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules since the driver loaded; Volta
   and later) read at the run's start and at its end; the difference is measured energy of the
   GPUs themselves. NVIDIA states its power readings to within about 5 %, so the range is +-5 %;
   host CPUs, memory, network and cooling are not in it (said so).
2. **codecarbon**, where installed and it starts (``OfflineEmissionsTracker``: no network): its
   ``energy_consumed`` (CPU by RAPL or a TDP rule, GPU by NVML, RAM by a per-GB rule), range +-20 %
   since part of it may be its own estimate.
3. Otherwise the accelerator table's rated power x devices x the run's wall-clock hours
   (``methods/energy.py``, the arithmetic a plan's estimate uses), said to be an estimate.

Each rank reads its own devices; rank 0's dossier sums them (``combine``).
"""
from __future__ import annotations

import math
import platform
from fractions import Fraction
from typing import Any

NVML_METHOD = ("measured: each GPU's NVML total-energy counter (nvmlDeviceGetTotalEnergyConsumption), read at the "
               "run's start and end; the GPUs alone")
CODECARBON_METHOD = "measured or estimated by codecarbon (OfflineEmissionsTracker): CPU, GPU and RAM"
NVML_SPREAD, CODECARBON_SPREAD = Fraction(5, 100), Fraction(20, 100)


class EnergyMeter:
    """What can say this process's energy: NVML counters of its GPUs, codecarbon, or nothing."""

    def __init__(self, kind: str | None, handle: Any = None, start: list[int] | None = None):
        self.kind, self.handle, self.start_mj = kind, handle, start or []

    @classmethod
    def start(cls, model=None) -> "EnergyMeter":
        gpus = _cuda_indices(model)
        if gpus:
            meter = _nvml_meter(gpus)
            if meter is not None:
                return meter
        return _codecarbon_meter() or cls(None)

    def read(self, hours: float) -> dict[str, Any] | None:
        """This process's energy since start() in watt-hours, with how it was found; None: no meter."""
        if self.kind == "nvml":
            pynvml, handles = self.handle
            try:
                now = [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in handles]
            except Exception:  # the driver went away: nothing measured rather than a wrong figure
                return None
            return {"kind": "nvml", "wh": Fraction(sum(now) - sum(self.start_mj), 3_600_000),
                    "devices": len(handles)}
        if self.kind == "codecarbon":
            try:
                self.handle.stop()
                kwh = self.handle.final_emissions_data.energy_consumed
            except Exception:  # codecarbon that starts but cannot say: no figure
                return None
            return {"kind": "codecarbon", "wh": Fraction(str(kwh)) * 1000}
        return None


def _cuda_indices(model) -> list[int]:
    if model is None:
        return []
    return sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})


def _nvml_meter(gpus: list[int]) -> EnergyMeter | None:
    try:
        import pynvml
        import torch

        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByPciBusId(_bus_id(torch.cuda.get_device_properties(i)))
                   for i in gpus]
        start = [int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in handles]
    except Exception:  # not installed, no driver, a GPU without the counter (before Volta)
        return None
    return EnergyMeter("nvml", (pynvml, handles), start)


def _bus_id(props) -> str:
    """NVML knows a GPU by its PCI address; CUDA's index may differ (CUDA_VISIBLE_DEVICES)."""
    return f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


def _codecarbon_meter() -> EnergyMeter | None:
    try:
        from codecarbon import OfflineEmissionsTracker

        tracker = OfflineEmissionsTracker(country_iso_code="USA", save_to_file=False, log_level="error")
        tracker.start()
    except Exception:  # not installed, or it cannot run here
        return None
    return EnergyMeter("codecarbon", tracker)


def hardware_of(model) -> str:
    """The device the model's parameters live on, by name: 'NVIDIA H100 80GB HBM3', 'CPU (x86_64)'."""
    device = next((p.device for p in model.parameters()), None) if model is not None else None
    if device is not None and device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    if device is not None and device.type not in ("cpu", "meta"):
        return device.type
    return f"CPU ({platform.processor() or platform.machine() or 'unknown'})"


def model_facts(model) -> dict[str, Any]:
    """The watched model: its class and parameters (total, trainable, active per token for MoE)."""
    from auditor.counting.modelinfo import model_info

    unique = {id(p): p for p in model.parameters()}
    info = model_info(model)
    out = {"class": f"{type(model).__module__}.{type(model).__qualname__}", "parameters": info.parameters,
           "trainable_parameters": sum(p.numel() for p in unique.values() if p.requires_grad)}
    if info.active_parameters != info.parameters:
        out["active_parameters"] = info.active_parameters
    return out


def combine(ranks: list[dict[str, Any]], hours: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hardware, energy) for the dossier from every rank's device and meter reading."""
    devices: dict[str, int] = {}
    for r in ranks:
        devices[r["device"]] = devices.get(r["device"], 0) + 1
    hardware = {"world_size": len(ranks), "devices": [{"name": n, "count": c} for n, c in sorted(devices.items())]}
    readings = [r["energy"] for r in ranks]
    kinds = {r["kind"] if r else None for r in readings}
    if kinds == {"nvml"} or kinds == {"codecarbon"}:
        kind = kinds.pop()
        wh = sum(r["wh"] for r in readings)
        spread = NVML_SPREAD if kind == "nvml" else CODECARBON_SPREAD
        return hardware, _measured(kind, wh, spread, len(ranks), hours)
    return hardware, _rated(devices, hours)


def _measured(kind: str, wh: Fraction, spread: Fraction, ranks: int, hours: float) -> dict[str, Any]:
    method = NVML_METHOD if kind == "nvml" else CODECARBON_METHOD
    scope = ("host CPUs, memory, network and cooling are not included" if kind == "nvml" else
             "network and cooling are not included; parts codecarbon cannot read it estimates")
    return {"method": method, "wh": round(wh), "low_wh": math.floor(wh * (1 - spread)),
            "high_wh": math.ceil(wh * (1 + spread)), "measured": True,
            "assumptions": [f"{ranks:,} process{'es' if ranks > 1 else ''} over {hours:,.3g} h of this process's "
                            "wall-clock time (since its start or resume)",
                            f"range +-{int(spread * 100)} %" + (
                                ": NVIDIA's stated accuracy of its power readings" if kind == "nvml" else
                                ": codecarbon estimates what it cannot read"), scope]}


def _rated(devices: dict[str, int], hours: float) -> dict[str, Any]:
    """Rated power x devices x hours where the table knows every device's power; else why not."""
    from auditor.methods.energy import energy_from_plan
    from auditor.methods.hardware import find_accelerator

    found = {name: find_accelerator(name) for name in devices}
    missing = [name for name, acc in found.items() if acc is None or acc.power_w is None]
    if missing or len(found) != 1:
        why = (f"the accelerator table has no rated power for {', '.join(missing)}" if missing
               else "the ranks ran on different devices")
        return {"reason": f"not estimated: no readable energy counter (NVML) or codecarbon in this process, and "
                          f"{why}"}
    (name, acc), = found.items()
    return energy_from_plan(acc.id, devices[name], Fraction(hours).limit_denominator(10 ** 9), basis="run")

"""Where and in which precision the model runs: the device, the bf16/fp32 choice and moving batches.

``TrainConfig.precision`` is ``"fp32"``, ``"bf16"`` or ``"auto"``. ``"auto"`` picks bf16 where the
hardware has bf16 matrix units: a CUDA device that supports bf16, or a CPU whose flags list
``amx_bf16`` or ``avx512_bf16`` (Intel Xeon since Sapphire Rapids / Cooper Lake); otherwise fp32.
bf16 is autocast (``torch.autocast(device.type, dtype=torch.bfloat16)``): weights, optimizer state
and gradients stay fp32, the matrix products run in bf16. The BiLSTM, the CRF and the losses run in
fp32 under autocast too (``tvolib.model.TVOMNER.emissions`` switches autocast off around them), and
so do the gate and the mix of Eq. 4–5 with ``ModelConfig.fusion_fp32``.
"""
from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags (``/proc/cpuinfo``'s ``flags`` line; empty where there is none)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")) and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    return bool(cpu_flags(cpuinfo) & set(CPU_BF16_FLAGS))


def resolve_precision(precision: str, device: torch.device | str, cpuinfo: str | None = None) -> str:
    """``"fp32"`` or ``"bf16"`` for a setting on a device (``cpuinfo``: a ``/proc/cpuinfo`` text, tests)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_bf16(cpuinfo) else "fp32"
    return "fp32"


def slow_bf16(precision: str, device: torch.device | str, cpuinfo: str | None = None) -> str | None:
    """A one-line warning when a resolved bf16 precision meets hardware without bf16 matrix units
    (a CPU whose flags list neither of ``CPU_BF16_FLAGS``, or a CUDA device without bf16), else None.
    There the products are emulated: on an AVX2-only core an autocast bf16 linear layer ran 11x and a
    bf16 matmul 150x slower than in fp32 (``benchmarks/bf16_units.py``)."""
    device = torch.device(device)
    if precision != "bf16":
        return None
    if device.type == "cpu" and not cpu_has_bf16(cpuinfo):
        return ("precision bf16 on a CPU without bf16 matrix units (neither amx_bf16 nor avx512_bf16 in its "
                "flags): the products are emulated, about 10x slower than fp32 (docs/speed.md); "
                "precision fp32, or auto, which picks fp32 here")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "precision bf16 on a CUDA device without bf16 support: use fp32, or auto"
    return None


def autocast(device: torch.device | str, precision: str):
    """The autocast context for a resolved precision (a no-op context for fp32)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def resolve_device(pref: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``."""
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={pref!r} but no CUDA device is available")
    return torch.device("cuda", local_rank)


def to_device(batch: dict, device) -> dict:
    """A collated batch with every tensor (also in nested dicts) on ``device``."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = to_device(v, device)
        else:
            out[k] = v
    return out

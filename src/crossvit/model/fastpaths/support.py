"""What this CPU and this torch can run: asked once, at first use, by every fast path.

A fast path that calls a private operator or relies on a dtype being fast asks `cpu_support()`
first and takes plain PyTorch otherwise. `CROSSVIT_CPU=generic` in the environment (or
`simulate_cpu("generic")` in code, as the tests do) makes the library act as on a CPU with none
of these: no native bf16, no bf16 in oneDNN, no oneDNN linear operators; `CROSSVIT_CPU=avx2`
as on an AVX2 CPU, whose oneDNN runs fp32 but not bf16.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ...errors import CrossViTError

ENV_VAR = "CROSSVIT_CPU"


@dataclass(frozen=True)
class CpuSupport:
    isa: str  # the widest vector instructions torch uses here: "AVX2", "AVX512", ...
    onednn_linear: bool  # torch has oneDNN's fused linear operators (weights packed once, bias and GELU inside)
    onednn_bf16: bool  # oneDNN computes bf16 on this CPU (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX); else it raises
    native_bf16: bool  # bf16 products in hardware (AVX512-BF16 or AMX): bf16 faster than fp32; else emulated, far slower
    simulated: str | None = None  # the profile simulated through CROSSVIT_CPU, if any

    def fp32_linear_pays(self, in_features: int, rows: int) -> bool:
        """Whether oneDNN's fp32 linear beats F.linear for this shape, as measured on 2 cores.
        AVX-512: 1.05-1.2x faster, except for 128 input features over more than 4096 rows.
        AVX2 (Zen 3): 0.67-1.16x at up to 1604 rows (batch 1-4 of crossvit_9_240), 1.05-1.67x
        from 3208 rows on."""
        if self.isa.startswith("AVX512"):
            return in_features >= 256 or rows <= 4096
        return rows >= 3072

    def describe(self) -> str:
        bf16 = "native" if self.native_bf16 else "oneDNN kernels, no bf16 instructions" if self.onednn_bf16 else "emulated (slow)"
        return (f"{self.isa}, bf16 {bf16}, oneDNN linear {'yes' if self.onednn_linear else 'no'}"
                + (f" (simulated: {ENV_VAR}={self.simulated})" if self.simulated else ""))


def _ask(query):
    """A capability query that older or other builds of torch may lack: None where it is missing."""
    try:
        return query()
    except (AttributeError, RuntimeError):
        return None


def _probe(query) -> bool:
    return bool(_ask(query))


@functools.cache
def detected() -> CpuSupport:
    """The real capabilities of this CPU and torch build."""
    linear_ops = torch.backends.mkldnn.is_available() and all(
        _probe(lambda name=name: hasattr(torch.ops.mkldnn, name)) for name in ("_linear_pointwise", "_reorder_linear_weight"))
    isa = _ask(lambda: torch.backends.cpu.get_cpu_capability())
    return CpuSupport(
        isa=isa if isinstance(isa, str) else "unknown",
        onednn_linear=linear_ops,
        onednn_bf16=linear_ops and _probe(lambda: torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        native_bf16=_probe(lambda: torch.cpu._is_avx512_bf16_supported()) or _probe(lambda: torch.cpu._is_amx_tile_supported()),
    )


def _profile(name: str) -> CpuSupport:
    """A CPU simulated on this one: 'generic' has neither native bf16 nor oneDNN's linear
    operators; 'avx2' has the operators but computes bf16 in neither (a Zen 3, a 12th-gen Intel)."""
    if name == "generic":
        return CpuSupport("generic", onednn_linear=False, onednn_bf16=False, native_bf16=False, simulated="generic")
    if name == "avx2":
        return CpuSupport("AVX2", onednn_linear=detected().onednn_linear, onednn_bf16=False, native_bf16=False,
                          simulated="avx2")
    raise CrossViTError(f"{ENV_VAR}={name!r}: use 'generic' (no bf16, no oneDNN fast paths), 'avx2' (no bf16), "
                        "or leave it unset for this CPU's own capabilities")


_override: list[CpuSupport] = []


def cpu_support() -> CpuSupport:
    """The capabilities the fast paths may use: this machine's, unless another CPU is simulated."""
    if _override:
        return _override[-1]
    return _from_environment()


@functools.cache
def _from_environment() -> CpuSupport:
    wanted = os.environ.get(ENV_VAR, "").strip().lower()
    return detected() if wanted in ("", "native") else _profile(wanted)


@contextlib.contextmanager
def simulate_cpu(name: str = "generic") -> Iterator[CpuSupport]:
    """Within the block, the fast paths act as on the CPU `name` ('generic' or 'avx2')."""
    _override.append(_profile(name))
    try:
        yield _override[-1]
    finally:
        _override.pop()

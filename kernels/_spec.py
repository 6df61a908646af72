"""What a kernel launch is, written down: enough to recompile it with ``triton.compile`` without a GPU.

Each kernels module lists every specialization its launchers can produce (``specializations()``);
``python -m benchmarks.kernel_resources`` compiles them for sm_80/sm_90 and checks their registers and spills.
The launchers take their block sizes and warps from the same module constants, so the list and
the launches cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# torch dtype -> Triton type name (signature strings) and the report's short name
TRITON_TYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}
PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
NUM_STAGES = 3  # Triton's default; the kernels have no pipelined loads, recorded for recompilation


def pointer(dtype: torch.dtype) -> str:
    return "*" + TRITON_TYPE[dtype]


@dataclass(frozen=True)
class Specialization:
    """One compilable launch: ``triton.compile(ASTSource(kernel, signature, constexprs), options=...)``.

    ``signature`` maps every argument name to its Triton type ("*fp32", "i32", "fp32", "constexpr");
    ``constexprs`` holds the compile-time values; ``dtype`` is the data dtype the launch serves.
    """

    kernel: object
    signature: dict = field(hash=False)
    constexprs: dict = field(hash=False)
    num_warps: int
    num_stages: int
    dtype: torch.dtype

    @property
    def module(self) -> str:
        return self.kernel.fn.__module__

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

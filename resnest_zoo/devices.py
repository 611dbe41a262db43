"""Which device to compute on, and what it can do natively."""
from __future__ import annotations

import torch

__all__ = ["default_device", "native_half_precision"]


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def native_half_precision(device: str | torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` runs ``dtype`` convolutions natively: float32 always; on CUDA, float16 always and
    bfloat16 where the GPU supports it; on a CPU, only with AVX512-BF16/AMX (bfloat16) or AVX512-FP16 (float16).
    Elsewhere autocast still works but emulates the arithmetic, several times slower than float32."""
    if dtype == torch.float32:
        return True
    kind = torch.device(device).type
    if kind == "cuda":
        return dtype != torch.bfloat16 or torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):  # a torch build without these oneDNN queries
        return False

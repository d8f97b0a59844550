"""The one rule that turns a device name (``cpu``, ``cuda``, ``cuda:N``, ``auto`` or None) into a torch device."""

from __future__ import annotations

import torch

from mfhpo.errors import MfhpoError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda when available, else cpu; a CUDA device without CUDA or a name torch does
    not know is a one-line :class:`MfhpoError`."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MfhpoError(f"device '{device}' is not a valid torch device (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MfhpoError(f"device '{device}' requested but CUDA is not available on this machine")
    return dev

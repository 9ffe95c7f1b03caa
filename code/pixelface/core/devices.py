"""The one device rule of every entry point and the API: 'auto' (the default everywhere) is the first CUDA
device when there is one, else the CPU; 'cpu', 'cuda' and 'cuda:N' name one."""
from __future__ import annotations

import torch

from pixelface.core.errors import InputError

def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The device `name` names, or InputError when it is malformed or not on this machine."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise InputError(f"device {str(name)!r}: expected auto, cpu or cuda[:N]")
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise InputError(f"device {str(name)!r}: no such CUDA device on this machine")
    return device

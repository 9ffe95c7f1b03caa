"""PixelFace+ in pure PyTorch."""

__all__ = ["PixelFace"]


def __getattr__(name: str):
    # PixelFace is exported lazily (PEP 562): importing it eagerly would load torch, CLIP and the networks
    # into every `import pixelface.core.config` (40 ms -> several seconds).
    if name == "PixelFace":
        from pixelface.editing.api import PixelFace
        return PixelFace
    raise AttributeError(f"module 'pixelface' has no attribute {name!r}")

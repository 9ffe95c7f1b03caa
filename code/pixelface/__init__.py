"""PixelFace+ in pure PyTorch."""

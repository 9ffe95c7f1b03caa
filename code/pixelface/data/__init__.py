"""Pixels and data: images, masks and their palette, the MM-CelebA dataset, synthetic faces."""

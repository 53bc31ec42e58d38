"""Array ops shared by all methods: PyTorch-exact resizing (more ops live in sibling modules)."""
from vssjax.ops.resize import resize_bilinear, resize_nearest

__all__ = ["resize_bilinear", "resize_nearest"]

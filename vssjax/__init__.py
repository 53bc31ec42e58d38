"""vssjax: video semantic segmentation in JAX/Flax."""

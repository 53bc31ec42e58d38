"""Data pipelines: video sources, TFDS builders, clip samplers, clip transforms, Grain loaders."""

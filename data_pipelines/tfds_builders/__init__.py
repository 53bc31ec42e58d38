"""TFDS builders that write any VideoSource as ArrayRecord, one record per video, without TF."""

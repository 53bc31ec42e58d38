"""TFDS builders that write any VideoSource as ArrayRecord, one record per frame, without TF."""

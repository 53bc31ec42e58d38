"""Video sources and their registry; importing this package registers every built-in source."""
from data_pipelines.sources import synthetic  # noqa: F401  (registers 'synthetic')
from data_pipelines.sources.base import (DataError, FrameRef, VideoRecord, VideoSource,
                                         get_source, register_source)

__all__ = ["DataError", "FrameRef", "VideoRecord", "VideoSource", "get_source", "register_source"]

"""Video sources and their registry; importing this package registers every built-in source."""
from data_pipelines.sources import (camvid, cityscapes, footage, synthetic,  # noqa: F401
                                    vspw, vtest_pseudo)
from data_pipelines.sources.base import (DataError, FrameRef, VideoRecord, VideoSource,
                                         get_source, register_source)

__all__ = ["DataError", "FrameRef", "VideoRecord", "VideoSource", "get_source", "register_source"]

"""Video sources and their registry; importing this package registers every built-in source.

`data.source` is a registered name or the import path "package.module:ClassName" of a
`VideoSource` subclass of one's own (docs/extending.md)."""
from data_pipelines.sources import (camvid, cityscapes, footage, synthetic,  # noqa: F401
                                    vspw, vtest_pseudo)
from data_pipelines.sources.base import (DataError, FrameRef, VideoRecord, VideoSource,
                                         get_source, register_source, source_class)

__all__ = ["DataError", "FrameRef", "VideoRecord", "VideoSource", "get_source", "register_source",
           "source_class"]

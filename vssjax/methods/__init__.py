"""Methods, chosen by `config.method.name`: a short name below, or the import path
"package.module:ClassName" of a `Method` subclass of one's own (docs/extending.md)."""

from __future__ import annotations

from vssjax import plugins
from vssjax.configs_lib import ConfigDict
from vssjax.methods.base import Method

# name -> "module:class"; imported lazily so one method's dependencies never slow another's start.
_REGISTRY = {
    "segformer": "vssjax.methods.segformer:SegFormerMethod",
    "dtern": "vssjax.methods.dtern:DTERNMethod",
    "sdcpc": "vssjax.methods.sdcpc:SDCPCMethod",
    "dcfm": "vssjax.methods.dcfm:DCFMMethod",
    "etc": "vssjax.methods.etc:ETCMethod",
}


def get_method(config: ConfigDict) -> Method:
  return plugins.resolve_class(config.method.name, _REGISTRY, Method, "method.name")(config)

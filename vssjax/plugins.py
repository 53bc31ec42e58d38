"""The classes a config names: a registered short name, or an import path of the user's own.

Researchers extend vssjax without forking it: `method.name` and `data.source` accept
"package.module:ClassName" for any module on `sys.path` besides the built-in short names
(docs/extending.md). Methods and sources share this one lookup, so both fail the same way and name
what was tried.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping

from vssjax.errors import SetupError


class NotASubclass(SetupError, TypeError):
  """A config names a class (or other object) that is not of the kind its field takes."""


def resolve_class(name: str, registry: Mapping[str, str | type], base: type, field: str) -> type:
  """The subclass of `base` that config field `field` names with `name`.

  `registry` maps short names to classes, or to import paths imported on first use (so that one
  method's dependencies never slow another's start). Any other `name` must be an import path.
  Raises a SetupError (a ValueError) when nothing by that name can be found, a `NotASubclass`
  (a SetupError and a TypeError) when what was found is not a subclass of `base` (it could not
  train or load data, and would fail later, less clearly): either is the config's mistake, said
  in one line by the commands.
  """
  target = registry.get(name, name)
  if isinstance(target, str):
    target = _import_class(target, field, known=sorted(registry))
  if not (isinstance(target, type) and issubclass(target, base)):
    raise NotASubclass(f"{field} {name!r} is {target!r}, not a subclass of "
                       f"{base.__module__}.{base.__qualname__}")
  if inspect.isabstract(target):  # Python's "Can't instantiate abstract class" traceback else
    missing = ", ".join(sorted(target.__abstractmethods__))
    raise SetupError(f"{field} {name!r}: {target.__qualname__} does not implement {missing} of "
                     f"{base.__qualname__} (docs/extending.md)")
  return target


def _import_class(path: str, field: str, known: list[str]) -> object:
  """The attribute `path` ("package.module:ClassName") names. A module that cannot be found is
  reported as such; errors raised while importing a module that was found propagate (they are
  bugs or missing dependencies of that module), with a note saying which config field imported
  it."""
  module_name, sep, class_name = path.partition(":")
  if not (sep and module_name and class_name):
    raise SetupError(f"unknown {field} {path!r}: neither a registered name ({', '.join(known)}) "
                     "nor an import path 'package.module:ClassName'")
  try:
    module = importlib.import_module(module_name)
  except Exception as e:
    if isinstance(e, ModuleNotFoundError) and _is_package_of(e.name, module_name):
      raise SetupError(f"{field} {path!r}: no module named {e.name!r}; is the folder that holds "
                       f"it on sys.path (PYTHONPATH)?") from e
    e.add_note(f"while importing {field} {path!r}")
    raise
  if not hasattr(module, class_name):
    raise SetupError(f"{field} {path!r}: module {module_name!r} has no attribute "
                     f"{class_name!r}")
  return getattr(module, class_name)


def _is_package_of(missing: str | None, module_name: str) -> bool:
  """Whether the module `missing` that was not found is `module_name` or one of its packages."""
  return missing is not None and (module_name == missing or module_name.startswith(missing + "."))

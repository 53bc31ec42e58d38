"""The README and docs/*.md name files, functions and headings that exist.

Every path into the repository (`vssjax/...`, `data_pipelines/...`, `configs/...`, `tests/...`,
`docs/...`) that the docs write in backticks or in a command must exist: brace patterns
(`configs/dcfm/{a,b}.py`) are expanded and each alternative checked, a glob
(`configs/segformer/cityscapes1024_mitb*.py`) must match a file, and `path.py::Name` (or
`path.Name`, the module without its `.py`) must define `Name` there. Every relative Markdown link
must reach a file, and its `#anchor` a heading of it. Each test lists every stale reference at
once, with the file it is in.
"""

import re

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PREFIXES = ("vssjax/", "data_pipelines/", "configs/", "tests/", "docs/")
# A file's path ends at its extension; what follows is `::Name`, `.Name` or a config's `:arg`.
_FILE = re.compile(r"(?P<path>.*?\.(?:py|md|txt|json|toml|png|jpg|sh))(?P<rest>(?:\W.*)?)$")


def _code_blocks(text: str) -> list[str]:
  """The fenced and the indented code blocks of Markdown `text`."""
  fenced = re.findall(r"^```.*?^```", text, flags=re.M | re.S)
  indented = re.findall(r"(?:^(?: {4}|\t).*\n)+", _prose(text), flags=re.M)
  return fenced + indented


def _prose(text: str) -> str:
  """`text` without its fenced code blocks."""
  return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _tokens(chunk: str) -> list[str]:
  """A backticked span whole, or each word of a command (`--config=x.py` gives `x.py`)."""
  if not re.search(r"\s", chunk):
    return [chunk]
  return re.split(r"[\s\"'=]+", chunk)


def _repository_paths(text: str) -> list[str]:
  """The paths into the repository that Markdown `text` names, in backticks or in its code."""
  chunks = re.findall(r"`([^`\n]+)`", _prose(text)) + _code_blocks(text)
  return [token for chunk in chunks for token in _tokens(chunk)
          if token.startswith(PREFIXES)
          and not re.search(r"[<>$]|\.\.\.", token)]  # templates, shell variables, elisions


def _expand_braces(pattern: str) -> list[str]:
  """`a{b,c{d,e}}f` -> [abf, acdf, acef], as the shell expands it."""
  start = pattern.find("{")
  if start < 0:
    return [pattern]
  depth, parts, begin = 0, [], start + 1
  for i in range(start, len(pattern)):
    if pattern[i] == "{":
      depth += 1
    elif pattern[i] == "}":
      depth -= 1
      if depth == 0:
        parts.append(pattern[begin:i])
        return [expanded for part in parts
                for expanded in _expand_braces(pattern[:start] + part + pattern[i + 1:])]
    elif pattern[i] == "," and depth == 1:
      parts.append(pattern[begin:i])
      begin = i + 1
  raise ValueError(f"unbalanced braces in {pattern!r}")


def _defines(path, name: str) -> bool:
  """Whether Python file `path` defines `name` (`Class.method`: each part) as a def, a class or
  a module-level assignment."""
  source = path.read_text()
  return all(re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(part)}\b"
                       rf"|^{re.escape(part)}\s*(?::|=)", source, re.M)
             for part in name.split("."))


def _split(reference: str) -> tuple[str, str]:
  """(path, name it says the file defines, or '') of one reference without braces."""
  match = _FILE.match(reference)
  if match:
    rest = match["rest"]
    return match["path"], rest[2:] if rest.startswith("::") else ""
  module, _, name = reference.rpartition(".")  # `vssjax/parallel.to_global`: a module's name
  if module and "/" not in name and (REPO / f"{module}.py").is_file():
    return f"{module}.py", name
  return reference.rstrip(".,;:"), ""


def _problems(reference: str) -> list[str]:
  """What is wrong with one repository path of the docs (nothing: [])."""
  problems = []
  for candidate in _expand_braces(reference):
    path, name = _split(candidate)
    if "*" in path:
      found = sorted(REPO.glob(path))
    else:
      found = [REPO / path] if (REPO / path).exists() else []
    if not found:
      problems.append(f"{candidate}: no such {'file matches' if '*' in path else 'path'}")
    elif name and not _defines(found[0], name):
      problems.append(f"{candidate}: {path} defines no {name}")
  return problems


def test_repository_paths_in_the_docs_exist():
  stale = [f"{doc.relative_to(REPO)}: `{reference}`: {problem}"
           for doc in DOCS
           for reference in _repository_paths(doc.read_text())
           for problem in _problems(reference)]
  assert not stale, "stale references in the docs:\n" + "\n".join(stale)


def _anchor(heading: str) -> str:
  """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path) -> set[str]:
  return {_anchor(heading) for heading in re.findall(r"^#+ (.*)$", _prose(path.read_text()), re.M)}


def test_relative_links_reach_files_and_headings():
  stale = []
  for doc in DOCS:
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(doc.read_text())):
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      file, _, anchor = target.partition("#")
      path = (doc.parent / file).resolve() if file else doc
      if not path.exists():
        stale.append(f"{doc.relative_to(REPO)}: ({target}): no such file")
      elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
        stale.append(f"{doc.relative_to(REPO)}: ({target}): no heading #{anchor} in {path.name}")
  assert not stale, "stale links in the docs:\n" + "\n".join(stale)


@pytest.mark.parametrize("pattern, expanded", [
    ("configs/dcfm/{a,b{2,5}}.py",
     ["configs/dcfm/a.py", "configs/dcfm/b2.py", "configs/dcfm/b5.py"]),
    ("x/{a,b}_{c,d}", ["x/a_c", "x/a_d", "x/b_c", "x/b_d"]),
    ("plain.py", ["plain.py"]),
])
def test_brace_patterns_expand_as_the_shell_does(pattern, expanded):
  assert _expand_braces(pattern) == expanded


def test_what_is_found_and_what_is_reported():
  assert _repository_paths("`vssjax/a.py` and `python -m x --config=configs/b.py:quick`\n"
                           "`configs/<method>/x.py`, `tests/...`, `other/c.py`\n\n"
                           "    python -m vssjax.main --config=configs/c.py\n") == [
                               "vssjax/a.py", "configs/b.py:quick", "configs/c.py"]
  assert _problems("vssjax/no_such_module.py") == ["vssjax/no_such_module.py: no such path"]
  assert _problems("configs/segformer/{vspw_mitb0,vspw_mitb9}.py") == [
      "configs/segformer/vspw_mitb9.py: no such path"]
  assert _problems("configs/nothing/*.py") == ["configs/nothing/*.py: no such file matches"]
  assert _problems("vssjax/parallel.py::no_such_function") == [
      "vssjax/parallel.py::no_such_function: vssjax/parallel.py defines no no_such_function"]
  assert _problems("vssjax/parallel.no_such_function") == [
      "vssjax/parallel.no_such_function: vssjax/parallel.py defines no no_such_function"]
  for fine in ("data_pipelines/sources/base.py::VideoSource", "vssjax/parallel.to_global",
               "vssjax/parallel.py::BATCH_AXES", "configs/segformer/synthetic_mitb0.py:quick",
               "vssjax/models/sdcpc_*.py", "data_pipelines/sources/", "tests/parity"):
    assert _problems(fine) == [], fine

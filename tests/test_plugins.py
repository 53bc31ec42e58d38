"""`method.name` and `data.source` as import paths of one's own classes, and the errors that say
what went wrong when they do not name one."""

import sys
import textwrap

import pytest

from data_pipelines import dataset
from data_pipelines.sources import get_source, synthetic
from tests.conftest import load_config
from tests.data_pipelines import helpers
from vssjax.errors import SetupError
from vssjax import methods
from vssjax.methods import get_method
from vssjax.methods.base import Method
from vssjax.methods.segformer import SegFormerMethod

PLUGIN = textwrap.dedent('''
    from data_pipelines.sources.synthetic import SyntheticVideoSource
    from vssjax.methods.base import Method
    from vssjax.methods.segformer import SegFormerMethod

    class MyMethod(SegFormerMethod):
      pass

    class MySource(SyntheticVideoSource):
      name = "my_synthetic"

    class Nameless(SyntheticVideoSource):
      name = ""

    class NotAMethod:
      pass

    class Unfinished(Method):  # without init and predictor
      def loss_and_metrics(self, params, model_state, batch, rng):
        raise NotImplementedError
    ''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
  """A module `vssjax_test_plugin` outside vssjax, and one whose import fails on a dependency."""
  (tmp_path / "vssjax_test_plugin.py").write_text(PLUGIN)
  (tmp_path / "vssjax_test_broken.py").write_text("import vssjax_test_missing_dependency\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  for name in ("vssjax_test_plugin", "vssjax_test_broken"):
    monkeypatch.delitem(sys.modules, name, raising=False)
  return "vssjax_test_plugin"


def _method(name: str) -> Method:
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.method.name = name
  return get_method(config)


def test_registered_names_still_work():
  assert type(_method("segformer")) is SegFormerMethod
  assert isinstance(get_source("synthetic"), synthetic.SyntheticVideoSource)


def test_import_paths_name_classes_outside_vssjax(plugin):
  assert type(_method(f"{plugin}:MyMethod")).__name__ == "MyMethod"
  source = get_source(f"{plugin}:MySource", num_frames=3)
  assert type(source).__name__ == "MySource" and source.knobs["num_frames"] == 3


def test_a_source_of_ones_own_takes_its_knobs_from_its_name(plugin, tmp_path):
  data = helpers.data_config(tmp_path, source=f"{plugin}:MySource",
                             my_synthetic=dict(num_train_videos=3))
  assert dataset.make_source(data).knobs["num_train_videos"] == 3


def test_a_source_of_ones_own_without_a_name_or_with_a_wrong_setting_says_what_to_fix(plugin,
                                                                                     tmp_path):
  data = helpers.data_config(tmp_path, source=f"{plugin}:Nameless")
  with pytest.raises(SetupError, match=r"^data.source='vssjax_test_plugin:Nameless': Nameless sets "
                     r"no name, the config section its settings go under \(data.<name>\)"):
    dataset.make_source(data)
  data = helpers.data_config(tmp_path, source=f"{plugin}:MySource", my_synthetic=dict(frames=3))
  with pytest.raises(SetupError, match=r"^data.my_synthetic=\{'frames': 3\}: source "
                     r"'vssjax_test_plugin:MySource' takes .* \(docs/extending.md\)$"):
    dataset.make_source(data)


def test_unknown_name_lists_the_registered_names_and_the_path_form():
  registered = ", ".join(sorted(methods._REGISTRY))  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=rf"unknown method.name 'segformr': neither a registered "
                     rf"name \({registered}\) nor an import path 'package.module:ClassName'"):
    _method("segformr")
  with pytest.raises(ValueError, match=r"unknown source 'nope': .*synthetic.*package.module"):
    get_source("nope")
  for malformed in ("my_vss:", ":MyMethod"):
    with pytest.raises(ValueError, match="neither a registered name"):
      _method(malformed)


def test_a_module_that_is_not_found_is_named(plugin):
  with pytest.raises(ValueError, match=r"method.name 'vssjax_test_nowhere.sub:MyMethod': no "
                     r"module named 'vssjax_test_nowhere'; .*PYTHONPATH"):
    _method("vssjax_test_nowhere.sub:MyMethod")


def test_a_missing_class_is_named(plugin):
  with pytest.raises(ValueError, match=r"module 'vssjax_test_plugin' has no attribute 'Nope'"):
    _method(f"{plugin}:Nope")


def test_a_class_of_the_wrong_kind_is_refused(plugin):
  with pytest.raises(TypeError, match=r"method.name 'vssjax_test_plugin:NotAMethod' is <class "
                     r".*NotAMethod'>, not a subclass of vssjax.methods.base.Method"):
    _method(f"{plugin}:NotAMethod")
  with pytest.raises(TypeError, match=r"not a subclass of data_pipelines.sources.base.VideoSource"):
    get_source(f"{plugin}:MyMethod")


def test_a_class_of_the_wrong_kind_is_a_setup_error_said_in_one_line(plugin):
  """The config's mistake, as an unknown name is: the commands print it without a traceback."""
  with pytest.raises(SetupError, match="not a subclass of vssjax.methods.base.Method"):
    _method(f"{plugin}:NotAMethod")
  with pytest.raises(SetupError, match="not a subclass of data_pipelines.sources.base.VideoSource"):
    get_source(f"{plugin}:MyMethod")


def test_a_method_that_does_not_implement_the_interface_names_what_it_lacks(plugin):
  """It was Python's "Can't instantiate abstract class" traceback."""
  with pytest.raises(SetupError, match=r"^method.name 'vssjax_test_plugin:Unfinished': Unfinished "
                     r"does not implement init, predictor of Method \(docs/extending.md\)$"):
    _method(f"{plugin}:Unfinished")


@pytest.mark.usefixtures("plugin")
def test_an_import_error_inside_the_module_is_not_hidden():
  """A dependency the user's module lacks is its own error, not "no such module"."""
  with pytest.raises(ModuleNotFoundError, match="vssjax_test_missing_dependency") as raised:
    _method("vssjax_test_broken:MyMethod")
  assert "while importing method.name 'vssjax_test_broken:MyMethod'" in raised.value.__notes__


def test_a_missing_dependency_whose_name_begins_the_modules_is_not_taken_for_it(plugin, tmp_path):
  """`vssjax_test_dep2` was found and imports a missing `vssjax_test_dep`: its own error (a
  dependency to install), not "no module named ...; is it on PYTHONPATH?"."""
  del plugin
  (tmp_path / "vssjax_test_dep2.py").write_text("import vssjax_test_dep\n")
  with pytest.raises(ModuleNotFoundError, match="'vssjax_test_dep'"):
    _method("vssjax_test_dep2:MyMethod")

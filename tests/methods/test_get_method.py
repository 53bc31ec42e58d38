"""`get_method`: the method of a config, traced at the config's float32 matmul precision."""
import jax
import pytest

from tests.conftest import load_config
from vssjax.errors import SetupError
from vssjax.methods import get_method, segformer


@pytest.fixture
def config():
  yield load_config("configs/segformer/synthetic_mitb0.py", "quick")
  jax.config.update("jax_default_matmul_precision", None)  # JAX's default again for later tests


@pytest.mark.parametrize("precision, expected", [("highest", "highest"),
                                                 ("tensorfloat32", "tensorfloat32"), ("", None)])
def test_the_configs_matmul_precision_is_jaxs_default_for_its_programs(config, precision,
                                                                       expected):
  jax.config.update("jax_default_matmul_precision", "bfloat16")  # an earlier method's
  config.model.matmul_precision = precision
  get_method(config)
  assert jax.config.jax_default_matmul_precision == expected


def test_an_unknown_precision_is_named(config):
  config.model.matmul_precision = "fp32"
  with pytest.raises(SetupError, match="model.matmul_precision='fp32'"):
    get_method(config)


def test_a_method_that_builds_another_keeps_its_own_precision(config):
  """ETC's distillation student builds its teacher with get_method; the teacher's config (its own
  matmul_precision, '') must not reset the student's for the programs traced after."""
  student = load_config("configs/etc/synthetic_psp18.py", "quick,variant=distill")
  student.model.matmul_precision = "highest"
  method = get_method(student)
  assert method.teacher.config.model.matmul_precision == ""
  assert jax.config.jax_default_matmul_precision == "highest"


def test_every_method_refuses_an_eval_transform_that_cannot_resize(config):
  """Checked as the method is built, so before training rather than at its first evaluation."""
  config.data.eval_transform.scale = (0, 0)
  with pytest.raises(SetupError, match=r"data.eval_transform.scale=\(0, 0\)"):
    get_method(config)


@pytest.mark.parametrize("config_path", ["configs/segformer/synthetic_mitb0.py",
                                         "configs/etc/synthetic_psp18.py"])
@pytest.mark.parametrize("field, value, expected", [
    ("decoder_dim", 0, r"model.decoder_dim=0: the head's width, a whole number of at least 1"),
    ("decoder_dim", -4, r"model.decoder_dim=-4:"),
    ("dropout_rate", 1.0, r"model.dropout_rate=1.0: a probability in \[0, 1\)"),
    ("dropout_rate", -0.1, r"model.dropout_rate=-0.1:"),
])
def test_every_method_refuses_a_head_it_cannot_build(config_path, field, value, expected):
  """A 0-wide head was a ZeroDivisionError deep in the first trace; checked as the method is
  built, for every method (the heads read these fields of `base_config`)."""
  config = load_config(config_path, "quick")
  config.model[field] = value
  with pytest.raises(SetupError, match=expected):
    get_method(config)


@pytest.mark.parametrize("config_path", ["configs/segformer/synthetic_mitb0.py",
                                         "configs/dtern/synthetic_mitb0.py",
                                         "configs/dcfm/synthetic_mitb0.py",
                                         "configs/etc/synthetic_psp18.py",
                                         "configs/sdcpc/synthetic_mitb0.py"])
def test_every_method_refuses_a_loss_average_naming_the_field(config_path):
  """Each method's loss reads `method.loss_average` only when the train step is traced."""
  config = load_config(config_path, "quick")
  config.method.loss_average = "mean"
  with pytest.raises(SetupError,
                     match=r"method.loss_average must be one of \('valid', 'all'\), got 'mean'"):
    get_method(config)


@pytest.mark.parametrize("name, field", [("dtern", "cam_kernels"), ("dcfm", "common_dim"),
                                         ("sdcpc", "mcp"), ("etc", "temporal_formulation")])
def test_another_methods_name_on_a_config_says_which_field_it_lacks(name, field):
  """`--config.method.name=dtern` on a SegFormer config raised the ConfigDict's bare
  AttributeError "'cam_kernels'"; other AttributeErrors are not disguised."""
  config = load_config("configs/segformer/synthetic_mitb0.py", "quick")
  config.method.name = name
  with pytest.raises(SetupError, match=rf"method.name='{name}': this config has no field "
                     rf"'{field}', which the method reads: .*\(configs/{name}/\)"):
    get_method(config)


def test_an_attribute_error_of_a_method_itself_is_not_called_a_missing_field(monkeypatch):
  def broken(model, num_classes):
    del model, num_classes
    return None.attribute  # a bug in the method's own code

  monkeypatch.setattr(segformer, "build_segformer", broken)
  with pytest.raises(AttributeError, match="'NoneType' object has no attribute 'attribute'"):
    get_method(load_config("configs/segformer/synthetic_mitb0.py", "quick"))

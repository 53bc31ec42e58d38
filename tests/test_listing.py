"""Names said in one line."""
from vssjax.listing import first_few


def test_the_first_three_are_named_and_the_rest_counted():
  assert first_few(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
  assert first_few(("a", "b", "c")) == "a, b, c"
  assert first_few(["a", "b"], shown=1) == "a and 1 more"
  assert first_few([]) == ""

r"""Several evaluated runs side by side, as one Markdown table (the tables of docs/results.md).

  python -m vssjax.eval.compare "SegFormer=workdirs/segformer/results.json" \
      "DCFM K=2=workdirs/dcfm_k2.json" ... [--out=table.md]

Each column is one `results.json` written by `--mode=eval` (or training's final evaluation); the
rows are the headline metrics any of them has, in %, and the evaluator's measured frames/s, each
row's best value in bold. `python -m vssjax.tradeoff_plot` draws the same files as a plot.
"""

from __future__ import annotations

from absl import app, flags

from vssjax.command_line import user_errors_in_one_line
from vssjax.errors import SetupError
from vssjax.eval.report import comparison_table, read_labelled_runs
from vssjax.files import write_text_whole


@user_errors_in_one_line
def main(argv):
  if len(argv) < 2:
    raise app.UsageError("usage: python -m vssjax.eval.compare LABEL=results.json ... "
                         "[--out=FILE]")
  table = comparison_table(read_labelled_runs(argv[1:]))
  print(table)
  out = flags.FLAGS.out
  if out:
    try:
      write_text_whole(out, table + "\n")
    except OSError as error:
      # strerror: the error's own path is the provisional file beside `out` (files.write_whole)
      raise SetupError(f"--out={out}: cannot write it: {error.strerror or error}") from None


if __name__ == "__main__":
  # Defined here, not at import: other CLIs define flags of the same names in the same process.
  flags.DEFINE_string("out", None, "Also write the table to this Markdown file.")
  app.run(main)

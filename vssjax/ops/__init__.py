"""Array ops shared by models and methods, imported from their modules: resize.py (PyTorch-exact
resizing), pooling.py (adaptive average pooling), warp.py (flow warping), attention.py, conv.py and
depthwise.py (formulations that run fast on XLA:CPU), mixed_precision.py
(bf16 products and biases with float32 results and sums, as autocast's), top_k.py (`lax.top_k`
by a sort, which a batch split leaves split)."""

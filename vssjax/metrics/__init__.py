"""Host-side (numpy) evaluation metrics, imported from their modules: confusion.py (confusion-matrix
mIoU/fwIoU/accuracy), consistency.py (mVC_n, VEC_n), temporal_consistency.py (ETC's TC)."""

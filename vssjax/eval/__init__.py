"""Evaluation: drive a method's streaming predictor over every video and report the metrics."""

"""Prediction with a bundle: slices prepared as in training, the fold ensemble over test-time
views, studies, and the exported backends (ONNX)."""

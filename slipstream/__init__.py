"""Slipstream: serve Hugging Face sequence-classification models from ONNX Runtime."""

__version__ = "0.1.0"

"""Tests of slipstream.default_model."""

"""Inference built on the models: tagging many images to files (single process or sharded), ONNX export, Ray Data."""

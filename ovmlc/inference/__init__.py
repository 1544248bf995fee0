"""Inference layer: `load_model` (`factory.py`) and the `open-vocabulary-multi-label-classification` pipeline
(`pipeline.py`). Nothing is imported here, so importing one of them does not import the other."""

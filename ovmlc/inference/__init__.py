"""Inference layer: `load_model` (`factory.py`), the `open-vocabulary-multi-label-classification` pipeline
(`pipeline.py`), tagging many images to files (`tagging.py`, single process or sharded), ONNX export (`export_onnx.py`)
and Ray Data (`ray_tagger.py`). Nothing is imported here, so importing one of them does not import the others."""

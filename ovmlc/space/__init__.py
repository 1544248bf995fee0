"""The Gradio demo (`demo.py`: `TaggingService` + `build_demo`), launched by `spaces/ovmlc-demo/app.py`."""

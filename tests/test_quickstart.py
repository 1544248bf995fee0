import pytest
from helpers import save_hub_layout_clip

from ovmlc.cli import main as cli_main


@pytest.mark.slow
def test_quickstart_tiny_end_to_end(tmp_path, capsys):
    backbone = save_hub_layout_clip(tmp_path / "clip")
    assert cli_main(["quickstart", "--tiny", "--output", str(tmp_path / "run"), "--backbone", str(backbone)]) == 0
    out = capsys.readouterr().out
    assert "| CLIP zero-shot |" in out and "| MKT (stage 1) |" in out
    for folder in ("clip-zeroshot", "mkt"):
        assert (tmp_path / "run" / folder / "eval" / "metrics.json").is_file()
        assert (tmp_path / "run" / folder / "config.json").is_file()
    assert "spaces/ovmlc-demo/app.py --model" in out

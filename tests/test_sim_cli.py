"""`rig sim render` and `rig sim sheet` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import cv2
from typer.testing import CliRunner

from pipeline.rig_cli.sim import sim_app

runner = CliRunner()


def test_render_writes_the_configured_size(tmp_path: Path) -> None:
    out = tmp_path / "x.png"
    args = ["render", "--coin", "SIM-0002", "--side", "obverse", "--angle", "30"]
    result = runner.invoke(sim_app, [*args, "--light", "raking_n", "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert image is not None
    assert image.shape == (512, 512, 3)  # rig/config/presets/sim.yaml: 512 × 512 colour


def test_render_catalog_style_jpeg(tmp_path: Path) -> None:
    out = tmp_path / "ref.jpg"
    result = runner.invoke(
        sim_app, ["render", "--coin", "SIM-0001", "--catalog-style", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:2] == b"\xff\xd8"


def test_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    unknown_coin = runner.invoke(sim_app, ["render", "--coin", "SIM-9999", "--out", out])
    assert unknown_coin.exit_code == 2
    assert "SIM-0000..SIM-0023" in unknown_coin.output
    unknown_light = runner.invoke(sim_app, ["render", "--light", "laser", "--out", out])
    assert unknown_light.exit_code == 2 and "raking_n" in unknown_light.output
    bad_config = runner.invoke(sim_app, ["render", "--config", str(tmp_path / "none.yaml")])
    assert bad_config.exit_code == 2 and "no such config file" in bad_config.output
    assert not Path(out).exists()


def test_sheet_is_a_grid_of_coins_by_lights(tmp_path: Path) -> None:
    out = tmp_path / "sheet.png"
    args = ["sheet", "--coins", "2", "--side", "both", "--tile", "64", "--lights", "raking_n,top"]
    result = runner.invoke(sim_app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(out))
    assert image is not None
    header = 22
    assert image.shape == (header + 4 * 64, 3 * 64, 3)  # 2 coins × 2 sides; 2 lights + catalog

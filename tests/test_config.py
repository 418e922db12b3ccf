from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.rig_cli.app import app
from rig.config import load_config, parse_config
from rig.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def sim_data() -> dict:
    return yaml.safe_load((ROOT / "rig" / "config" / "presets" / "sim.yaml").read_text())


@pytest.mark.parametrize(
    "path", sorted((ROOT / "rig" / "config" / "presets").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_config_validates(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            lambda d: d["camera"].update(exposure_us=-5),
            "camera.sim.exposure_us",
            id="neg-exposure",
        ),
        pytest.param(
            lambda d: d["lightbox"]["patterns"].update(bad={"north": 1.5}),
            "patterns.bad.north",
            id="intensity",
        ),
        pytest.param(
            lambda d: d["turntable"].update(colour="red"),
            "turntable.grbl.colour: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            lambda d: d["turntable"].update(driver="stepperbox"), "turntable", id="bad-driver"
        ),
        pytest.param(
            lambda d: d["lightbox"]["channels"][0].update(address=70000), "address", id="register"
        ),
        pytest.param(
            lambda d: d["arm"]["workspace"].update(x_mm=[10, -10]), "workspace", id="workspace"
        ),
        pytest.param(
            lambda d: d["arm"].update(safe_pose={"x_mm": 900, "y_mm": 200, "z_mm": 100}),
            "safe_pose",
            id="pose-outside",
        ),
        pytest.param(lambda d: d["tray"].update(pitch_mm=400), "tray slot", id="tray-outside"),
        pytest.param(
            lambda d: d["turntable"]["limits"].update(min_deg=10, max_deg=0),
            "min_deg",
            id="limits-order",
        ),
        pytest.param(lambda d: d.pop("simulation"), "simulation", id="no-sim-section"),
    ],
)
def test_bad_values_are_named_in_one_line(mutate, expected: str) -> None:
    data = sim_data()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="x.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert expected in message


def test_cli_validate_bad_file_exits_2_with_one_line(tmp_path: Path) -> None:
    data = sim_data()
    data["camera"]["gain_db"] = 99
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "gain_db" in lines[0] and "99" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content", ["", "a: [", "- 1\n- 2\n"], ids=["empty", "broken-yaml", "list"]
)
def test_cli_validate_unparseable_files(tmp_path: Path, content: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1


def test_cli_validate_missing_file() -> None:
    result = runner.invoke(app, ["config", "validate", "/nonexistent/rig.yaml"])
    assert result.exit_code == 2 and "no such config file" in result.output


def test_cli_schema_is_json() -> None:
    import json

    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "turntable" in schema["properties"]

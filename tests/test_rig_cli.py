"""The `rig` command's device commands on the simulation backend, and its one-line failures."""

import socket
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.rig_cli.app import app
from rig import connect

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def sim_config() -> dict:
    return yaml.safe_load((ROOT / "rig" / "config" / "presets" / "sim.yaml").read_text())


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_one_line_exit_2(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_probe_lists_every_emulated_device() -> None:
    result = runner.invoke(
        app, ["probe", "--config", str(ROOT / "rig" / "config" / "presets" / "sim.yaml")]
    )
    assert result.exit_code == 0, result.output
    for device in ("turntable", "lightbox", "camera", "arm"):
        assert device in result.output
    assert "Grbl 1.1" in result.output  # the banner the real driver read from the emulator


def test_probe_bad_serial_port_is_one_line(tmp_path: Path) -> None:
    data = sim_config()
    data["turntable"].pop("emulate")
    data["turntable"]["link"] = {"kind": "serial", "port": str(tmp_path / "ttyUSB9")}
    result = runner.invoke(app, ["probe", "--config", str(write_config(tmp_path, data))])
    assert_one_line_exit_2(result, "ttyUSB9")


def test_probe_unreachable_modbus_device_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a refused connection may be a device rebooting: retried, then exit 3 (rerun), one line
    monkeypatch.setattr(connect, "DEFAULT_POLICY", connect.ConnectPolicy(attempts=1))
    data = sim_config()
    data["lightbox"].pop("emulate")
    port = unused_tcp_port()
    data["lightbox"]["link"] = {"kind": "tcp", "host": "127.0.0.1", "port": port}
    result = runner.invoke(app, ["probe", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 3, result.output
    (line,) = result.output.strip().splitlines()
    assert str(port) in line and "unreachable after 1 connect attempts" in line


def test_probe_bad_config_is_one_line(tmp_path: Path) -> None:
    data = sim_config()
    data["lightbox"]["patterns"]["raking_n"] = {"north": 3}
    result = runner.invoke(app, ["probe", "--config", str(write_config(tmp_path, data))])
    assert_one_line_exit_2(result, "raking_n")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    data = sim_config()
    data["turntable"].pop("emulate")
    data["turntable"]["link"] = {"kind": "serial", "port": str(tmp_path / "ttyUSB9")}
    result = runner.invoke(app, ["--debug", "probe", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code != 0
    assert result.exception is not None


def test_sim_serve_prints_endpoints_and_stops() -> None:
    result = runner.invoke(
        app,
        [
            "sim",
            "serve",
            "--config",
            str(ROOT / "rig" / "config" / "presets" / "sim.yaml"),
            "--duration-s",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "/dev/pts/" in result.output
    assert "127.0.0.1" in result.output


def test_devices_lists_without_error() -> None:
    result = runner.invoke(app, ["devices", "--max-opencv-index", "0"])
    assert result.exit_code == 0, result.output
    assert "devices" in result.output


@pytest.mark.parametrize("args", [["--version"]])
def test_version(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "coinrig" in result.output

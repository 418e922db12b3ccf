"""`rig calibrate flatfield` against the twin: gamma, white balance, residual non-uniformity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from capture.calibration.flatfield import (
    FlatFieldCorrector,
    as_channels,
    calibrate_flatfield,
    centre_mean,
    nonuniformity_pct,
)
from capture.calibration.models import CalibrationRecord, DeviceKey, utc_now
from capture.calibration.staging import Placement, stager_for
from capture.calibration.store import CalibrationStore
from rig.assembly import open_rig
from rig.config import load_config
from rig.sim.shading import LED_WHITE, SENSOR_RESPONSE
from rig.sim.target_scene import TwinRig

CONFIG = load_config("sim")
TRUE_GAMMA = 1 / 2.2


def test_flat_field_corrects_a_fresh_card_frame(tmp_path: Path) -> None:
    store = CalibrationStore(tmp_path)
    created = utc_now()
    stem = f"flatfield-{created.strftime('%Y%m%dT%H%M%SZ')}"
    with open_rig(CONFIG) as rig:
        stage = stager_for(rig)
        assert stage is not None
        run = calibrate_flatfield(
            rig, CONFIG, stage, stem=stem, patterns=["raking_n", "diffuse"], frames_per_pattern=3
        )
        record = CalibrationRecord(
            kind="flatfield",
            created=created,
            device=DeviceKey(rig=CONFIG.name, camera_serial="SIM-0001"),
            result=run.result,
        )
        stored = store.save(record, run.arrays, run.overlay)
        # an independent frame of the card, taken after the fit, corrected from the files
        stage(Placement("card"))
        rig.lightbox.set_pattern("raking_n")
        rig.camera.configure(exposure_us=run.result.patterns["raking_n"].exposure_us)
        frame = rig.camera.grab()
    result = run.result
    assert result.gamma == pytest.approx(TRUE_GAMMA, rel=0.01)
    truth = np.array(LED_WHITE) * np.array(SENSOR_RESPONSE)
    for name, flat in result.patterns.items():
        assert flat.white_balance == pytest.approx(list(truth[1] / truth), rel=0.01), name
        assert flat.nonuniformity_before_pct > 10.0  # the lens fall-off is real
        assert flat.nonuniformity_after_pct < 2.0
    corrector = FlatFieldCorrector(store.read(stored.path))
    corrected = corrector.correct(frame.image, "raking_n")
    assert corrected.dtype == frame.image.dtype and corrected.shape == frame.image.shape
    light = np.power(as_channels(corrected), 1 / result.gamma)
    before = np.power(as_channels(frame.image), 1 / result.gamma)
    assert nonuniformity_pct(before) > 10.0
    assert nonuniformity_pct(light) < 2.0
    centre = centre_mean(light, 0.3)
    assert np.ptp(centre) / centre.mean() < 0.015  # neutral after white balance
    assert corrector.reason_not_applied(frame.image, "top") is not None
    assert corrector.reason_not_applied(frame.image[:100], "raking_n") is not None


def test_each_pattern_gets_its_own_flat_when_raking_lights_fall_off(tmp_path: Path) -> None:
    # lights 300 mm away: a raking light lights its own side of the card ~40 % more than the
    # far side, so the north and east flats differ and only a pattern's own flat corrects it
    near = TwinRig(light_distance_mm=300.0)
    store = CalibrationStore(tmp_path)
    created = utc_now()
    stem = f"flatfield-{created.strftime('%Y%m%dT%H%M%SZ')}"
    with open_rig(CONFIG) as rig:
        stage = stager_for(rig, near)
        assert stage is not None
        run = calibrate_flatfield(
            rig, CONFIG, stage, stem=stem, patterns=["raking_n", "raking_e"], frames_per_pattern=3
        )
        record = CalibrationRecord(
            kind="flatfield",
            created=created,
            device=DeviceKey(rig=CONFIG.name, camera_serial="SIM-0001"),
            result=run.result,
        )
        corrector = FlatFieldCorrector(store.read(store.save(record, run.arrays).path))
        stage(Placement("card"))
        rig.lightbox.set_pattern("raking_n")
        rig.camera.configure(exposure_us=run.result.patterns["raking_n"].exposure_us)
        frame = rig.camera.grab()
    for name, flat in run.result.patterns.items():
        assert flat.nonuniformity_before_pct > 40.0, name  # gradient and lens fall-off
        assert flat.nonuniformity_after_pct < 2.0, name
    north = corrector.stored.array(run.result.patterns["raking_n"].array).mean(axis=2)
    assert north[5].mean() / north[-6].mean() > 1.25  # the top (north) of the card is brighter
    gamma = run.result.gamma
    own = np.power(as_channels(corrector.correct(frame.image, "raking_n")), 1 / gamma)
    assert nonuniformity_pct(own) < 2.0
    # the east light's flat on a north-lit frame leaves both gradients in: per pattern matters
    wrong = np.power(as_channels(corrector.correct(frame.image, "raking_e")), 1 / gamma)
    assert nonuniformity_pct(wrong) > 20.0

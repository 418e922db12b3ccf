"""A saved hierarchy run: `pipeline train --task hierarchy`, then `pipeline evaluate` on it.

Training first cross-validates, as the landmarks paper does (class-balanced folds by coin;
balanced accuracy for reverse-only, obverse-only and the hierarchy; optionally the dense-SIFT
baseline beside it), then trains the two classifiers once more on every labelled coin and saves
them as safetensors, so the run can classify coins it has never seen:
`pipeline evaluate --run RUN --data OTHER`.

A type class is a (ruler, type) pair (training.hierarchy.type_class), in the saved labels too.

Run layout: RUN/config.json (task "hierarchy", labels, settings, training coins),
RUN/checkpoints/hierarchy/{ruler,type}.safetensors, RUN/cv/{results.json, METHOD-ROW.png},
RUN/eval-hierarchy/{metrics.json, ROW.png} after an evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file

from training.checkpoint import save_weights, write_atomic
from training.errors import DataError, RunFolderError, SettingsError
from training.hierarchy import (
    Classifier,
    ClassifierSettings,
    FoldTally,
    LabelledImage,
    LabelSpace,
    group_coins,
    hierarchy_predict,
    load_labelled_images,
    predict_proba,
    run_hierarchy_cv,
    train_classifier,
    type_class,
)
from training.hierarchy_plot import write_confusion_png
from training.sift_baseline import run_sift_baseline_cv
from training.validation import check_fields, whole

TASK = "hierarchy"
CONFIG_FILE = "config.json"
CHECKPOINTS = Path("checkpoints") / "hierarchy"
# config.json's `class_labels`: how its `types` name classes; runs without it named bare types
CLASS_LABELS = "type [ruler]"

# result key, table column: what each row of the paper's table measures
ROWS = (
    ("reverse_only", "reverse only (type)"),
    ("obverse_only", "obverse only (ruler)"),
    ("hierarchy", "hierarchy (type)"),
)

Warn = Callable[[str], None]


def _ignore(message: str) -> None:
    """Default `warn`: say nothing."""


@dataclass(frozen=True)
class HierarchyModel:
    """The ruler classifier (reads obverses), the type classifier (reads reverses), their labels."""

    ruler_model: Classifier
    type_model: Classifier
    rulers: list[str]
    types: list[str]  # class labels: type_class(ruler, type)
    ruler_of_type: list[int]  # index into rulers, per type class

    def predict(
        self, obverse: Sequence[np.ndarray], reverse: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ruler (from the obverse), type (reverse only) and hierarchy type, as label indices."""
        p_ruler = predict_proba(self.ruler_model, obverse)
        p_type = predict_proba(self.type_model, reverse)
        return (
            p_ruler.argmax(1),
            p_type.argmax(1),
            hierarchy_predict(p_ruler, p_type, self.ruler_of_type),
        )


def cross_validate_methods(
    images: Sequence[LabelledImage],
    settings: ClassifierSettings,
    *,
    folds: int,
    seed: int,
    baseline: bool,
    warn: Warn = _ignore,
) -> dict[str, dict[str, Any]]:
    """The paper's table: the CNN classifiers' cross-validation, and dense SIFT when asked."""
    results = {"cnn": run_hierarchy_cv(images, settings, folds=folds, seed=seed, warn=warn)}
    if baseline:
        results["sift"] = run_sift_baseline_cv(images, folds=folds, seed=seed)
    return results


def write_cv_results(out: Path, results: dict[str, dict[str, Any]]) -> None:
    """OUT/results.json and one confusion-matrix PNG per method and row."""
    out.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        for key, title in ROWS:
            write_confusion_png(out / f"{name}-{key}.png", result[key], f"{name}: {title}")
    text = json.dumps(results, indent=2) + "\n"
    write_atomic(out / "results.json", lambda p: p.write_text(text))


def fit_hierarchy(
    images: Sequence[LabelledImage], settings: ClassifierSettings
) -> tuple[HierarchyModel, list[str]]:
    """Train both classifiers on every coin that has both sides; returns them and those coins.

    Raises:
        DataError: fewer than two types or two rulers to tell apart.
    """
    coins = group_coins(images)
    labels = LabelSpace.of(coins)
    types, rulers = labels.types, labels.rulers
    if len(types) < 2 or len(rulers) < 2:
        raise DataError(
            f"need at least 2 types and 2 rulers with both sides imaged; found {len(types)} "
            f"type(s) under {len(rulers)} ruler(s)"
        )
    ruler_index, type_index = labels.ruler_index, labels.type_index
    obverse = [i for c in coins for i in c.obverse]
    reverse = [i for c in coins for i in c.reverse]
    ruler_model = train_classifier(
        [images[i].image for i in obverse],
        [ruler_index[images[i].ruler] for i in obverse],
        len(rulers),
        settings,
    )
    type_model = train_classifier(
        [images[i].image for i in reverse],
        [type_index[images[i].type_class] for i in reverse],
        len(types),
        settings,
    )
    model = HierarchyModel(ruler_model, type_model, rulers, types, labels.ruler_of_type)
    return model, [c.coin_id for c in coins]


def save_hierarchy_run(
    run: Path, model: HierarchyModel, settings: ClassifierSettings, meta: dict[str, Any]
) -> None:
    """Weights first, config.json last (each renamed into place): no config without its weights."""
    checkpoints = run / CHECKPOINTS
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name, net in (("ruler", model.ruler_model), ("type", model.type_model)):
        save_weights(checkpoints / f"{name}.safetensors", net)
    config = {
        "task": TASK,
        "settings": asdict(settings),
        "rulers": model.rulers,
        "types": model.types,
        "class_labels": CLASS_LABELS,
        "ruler_of_type": model.ruler_of_type,
        **meta,
    }
    text = json.dumps(config, indent=2) + "\n"
    write_atomic(run / CONFIG_FILE, lambda p: p.write_text(text))


def run_task(run: Path) -> str | None:
    """The task of the run in RUN ("embedding" or "hierarchy"); None where no run is written.

    Embedding runs predate the task key, so a config without one is an embedding run.

    Raises:
        DataError: RUN/config.json exists but cannot be read as a JSON object.
    """
    path = run / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"unreadable run config {path}: {error}") from error
    if not isinstance(config, dict):
        raise DataError(f"unreadable run config {path}: not a JSON object")
    return str(config.get("task", "embedding"))


def is_hierarchy_run(run: Path) -> bool:
    """Whether RUN was written by `pipeline train --task hierarchy` (False if unreadable)."""
    try:
        return run_task(run) == TASK
    except DataError:
        return False


def load_hierarchy_run(run: Path) -> tuple[HierarchyModel, dict[str, Any]]:
    """The saved classifiers and the run's config.

    Raises:
        DataError: not a hierarchy run, or its weights are missing or do not fit its config.
    """
    if run_task(run) != TASK:
        raise DataError(f"{run} is not a run of `pipeline train --task hierarchy`")
    config: dict[str, Any] = json.loads((run / CONFIG_FILE).read_text())
    try:
        check_fields(ClassifierSettings, config["settings"], "settings")
        settings = ClassifierSettings(**config["settings"])
        settings.check()
        rulers, types = list(config["rulers"]), list(config["types"])
        ruler_of_type = [int(r) for r in config["ruler_of_type"]]
        if not all(0 <= r < len(rulers) for r in ruler_of_type) or len(ruler_of_type) != len(types):
            raise ValueError("ruler_of_type does not index the rulers, one per type")
        if config.get("class_labels") != CLASS_LABELS:
            # an older run named bare types, each under one ruler: the same classes, renamed
            types = [type_class(rulers[r], t) for t, r in zip(types, ruler_of_type, strict=True)]
        # written by train_hierarchy_run; a run saved otherwise (tests, notebooks) may lack them
        whole("per_side", config.get("per_side", 4), low=1)
        if not isinstance(config.get("derotate", False), bool):
            raise ValueError(f"derotate {config['derotate']!r:.20} is not true or false")
    except (KeyError, TypeError, ValueError, SettingsError) as error:
        raise RunFolderError(f"damaged run config {run / CONFIG_FILE}: {error!r:.200}") from error
    nets = []
    for name, classes in (("ruler", rulers), ("type", types)):
        path = run / CHECKPOINTS / f"{name}.safetensors"
        if not path.is_file():
            raise DataError(f"missing weights: {path}")
        net = Classifier(settings.model, settings.image_size, len(classes))
        try:
            net.load_state_dict(load_file(str(path)), strict=True)
        except (RuntimeError, SafetensorError) as error:
            raise DataError(
                f"{path} is damaged or does not fit the run's config: {error}"
            ) from error
        nets.append(net.eval())
    return HierarchyModel(nets[0], nets[1], rulers, types, ruler_of_type), config


def train_hierarchy_run(
    data: Sequence[Path],
    run: Path,
    settings: ClassifierSettings,
    *,
    folds: int = 5,
    per_side: int = 4,
    derotate: bool = False,
    baseline: bool = True,
    cache_dir: Path | None = None,
    warn: Warn = _ignore,
) -> dict[str, dict[str, Any]]:
    """Cross-validate (RUN/cv), then train on every coin and save the classifiers; returns the CV.

    Raises:
        TrainingError: bad settings, unreadable data, missing labels, too few types or coins.
    """
    settings.check()
    images = load_labelled_images(
        data, settings.image_size, cache_dir=cache_dir, per_side=per_side, derotate=derotate
    )
    results = cross_validate_methods(
        images, settings, folds=folds, seed=settings.seed, baseline=baseline, warn=warn
    )
    write_cv_results(run / "cv", results)
    model, coins = fit_hierarchy(images, settings)
    meta = {
        "data": [str(d) for d in data],
        "folds": folds,
        "per_side": per_side,
        "derotate": derotate,
        "training_coins": coins,
    }
    save_hierarchy_run(run, model, settings, meta)
    return results


def evaluate_hierarchy_run(
    run: Path,
    data: Sequence[Path],
    *,
    cache_dir: Path | None = None,
    warn: Warn = _ignore,
) -> dict[str, Any]:
    """The saved classifiers on the labelled coins of `data`; writes RUN/eval-hierarchy.

    Coins of type classes the run never saw (a type it knows under another ruler is one) cannot
    be classified and are left out (named through `warn`); coins the run trained on are counted
    and warned about, since their figures are optimistic.

    Raises:
        TrainingError: not a hierarchy run, unreadable data, or no coin of a known type.
    """
    model, config = load_hierarchy_run(run)
    settings = ClassifierSettings(**config["settings"])
    images = load_labelled_images(
        data,
        settings.image_size,
        cache_dir=cache_dir,
        per_side=int(config.get("per_side", 4)),
        derotate=bool(config.get("derotate", False)),
    )
    coins = group_coins(images)
    space = LabelSpace(model.types, model.rulers, model.ruler_of_type)
    type_index, ruler_index = space.type_index, space.ruler_index
    unknown = sorted({c.type_class for c in coins if c.type_class not in type_index})
    if unknown:
        warn(f"left out coins of {len(unknown)} type(s) the run never saw: {', '.join(unknown)}")
    coins = [c for c in coins if c.type_class in type_index]
    if not coins:
        raise DataError("no coin with both sides imaged is of a type the run was trained on")
    seen = set(config.get("training_coins", []))
    # runs from before collections recorded bare ids
    trained_on = sum(c.coin_id in seen or c.coin_id.rsplit("/", 1)[-1] in seen for c in coins)
    if trained_on:
        warn(f"{trained_on} of {len(coins)} coins were used in training: figures are optimistic")
    # one prediction per (k-th obverse, k-th reverse) pair of a coin, as in cross-validation
    pairs = [(c, o, r) for c in coins for o, r in zip(c.obverse, c.reverse, strict=False)]
    ruler, reverse_only, hierarchy = model.predict(
        [images[o].image for _, o, _ in pairs], [images[r].image for _, _, r in pairs]
    )
    true_type = np.array([type_index[c.type_class] for c, _, _ in pairs])
    true_ruler = np.array([ruler_index[c.ruler] for c, _, _ in pairs])
    report: dict[str, Any] = {"coins": len(coins), "pairs": len(pairs), "trained_on": trained_on}
    for key, truth, predicted, labels in (
        ("reverse_only", true_type, reverse_only, model.types),
        ("obverse_only", true_ruler, ruler, model.rulers),
        ("hierarchy", true_type, hierarchy, model.types),
    ):
        tally = FoldTally(np.zeros((len(labels), len(labels)), np.int64))
        tally.add(truth, predicted)
        report[key] = {**tally.summary(labels), "accuracy": float(np.mean(truth == predicted))}
    out = run / "eval-hierarchy"
    out.mkdir(parents=True, exist_ok=True)
    for key, title in ROWS:
        write_confusion_png(out / f"{key}.png", report[key], title)
    text = json.dumps(report, indent=2) + "\n"
    write_atomic(out / "metrics.json", lambda p: p.write_text(text))
    return report

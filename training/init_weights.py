"""Where a run's starting weights come from: another run (`--init RUN`) or a torchvision file.

`pipeline train --init RUN` starts from the weights of RUN's `best` checkpoint (`last` if it has
none; a checkpoint folder works too): every tensor whose name and shape fit the new model is
copied, the rest (an embedding head of another size or grid, a BatchNorm neck the other run
lacked) keeps its fresh initialisation, and the loss's class centres always start anew (the
coins are others). This is the fine-tuning half of twin pretraining (docs/pretraining.md).

`--weights` takes a torchvision-style `.pth` file, or a torchvision model name (`resnet50`,
`resnet18`, `convnext_tiny`, `inception_v3`) that names the file torchvision downloads into
torch's hub cache (`torch.hub.get_dir()/checkpoints/resnet50-*.pth`; `$TORCH_HOME` moves it).
Nothing is ever downloaded: an absent file is one line and exit 2.

Either source must be of the model's family (a resnet50 run or resnet50 weights for
resnet50-truncated, say); anything else is refused in one line rather than half-loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from training.checkpoint import CONFIG_FILE, load_checkpoint
from training.errors import SettingsError
from training.models.embedding import EmbeddingModel

# Models whose backbones share parameter names and shapes (a truncated ResNet-50 is the first
# three stages of one): weights move freely inside a family, never across.
FAMILIES = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "resnet50-truncated": "resnet50",
    "convnext-tiny": "convnext_tiny",
    "inception-v3": "inception_v3",
    "resnet-tiny": "resnet-tiny",
    "resnet-tiny-truncated": "resnet-tiny",
}
# torchvision's file names in the hub cache (NAME-HASH.pth), by the family they fit
HUB_STEMS = {
    "resnet18": "resnet18",
    "resnet50": "resnet50",
    "convnext_tiny": "convnext_tiny",
    "inception_v3": "inception_v3_google",
}


def family(model: str) -> str:
    """The weight family of a model name (models of one family share backbone weights)."""
    return FAMILIES.get(model, model)


def hub_checkpoints() -> Path:
    """The folder of torch's hub cache that holds weights: `torch.hub.get_dir()/checkpoints`."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: str, model: str) -> Path:
    """The `.pth` file `--weights SPEC` means for `model`: SPEC itself, or a hub cache file.

    Raises:
        SettingsError: no such file, a name whose file is not in the hub cache, or weights of
            another family than the model's (each one line).
    """
    path = Path(spec)
    if path.is_file():
        return path
    name = spec.replace("-", "_")
    if name not in HUB_STEMS:
        raise SettingsError(
            f"--weights {spec}: no such file, and not a torchvision name ({', '.join(HUB_STEMS)})"
        )
    if name != family(model).replace("-", "_"):
        fits = [m for m, f in FAMILIES.items() if f.replace("-", "_") == name]
        raise SettingsError(
            f"--weights {spec} are {name} weights: they fit {' or '.join(fits)}, not {model}"
        )
    folder = hub_checkpoints()
    found = sorted(folder.glob(f"{HUB_STEMS[name]}-*.pth"))
    if not found:
        raise SettingsError(
            f"--weights {spec}: no {HUB_STEMS[name]}-*.pth in {folder} (torch's hub cache; "
            "nothing is downloaded): copy torchvision's file there or give its path"
        )
    return found[0]


def init_checkpoint(source: Path) -> Path:
    """The checkpoint folder `--init SOURCE` reads: RUN/checkpoints/best (else last), or SOURCE.

    Raises:
        SettingsError: SOURCE is neither a run with a checkpoint nor a checkpoint folder.
    """
    for folder in (source / "checkpoints" / "best", source / "checkpoints" / "last", source):
        if (folder / CONFIG_FILE).is_file():
            return folder
    raise SettingsError(
        f"--init {source}: not a training run with a checkpoint (no checkpoints/best/{CONFIG_FILE})"
    )


@dataclass
class InitReport:
    """What `init_from` copied and what kept its fresh initialisation."""

    source: Path
    model: str
    copied: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One line for the log: how many tensors came from where, and which did not."""
        fresh = f"; new: {', '.join(self.fresh[:4])}" if self.fresh else ""
        more = f" (+{len(self.fresh) - 4})" if len(self.fresh) > 4 else ""
        return f"init from {self.source} ({self.model}): {len(self.copied)} tensors{fresh}{more}"


def init_from(model: EmbeddingModel, source: Path) -> InitReport:
    """Copy the weights of a run's checkpoint that fit `model`; the rest stays as initialised.

    Raises:
        SettingsError: not a run, or a model of another family (nothing of it would fit).
        RunFolderError: the checkpoint is damaged (its settings or weights).
    """
    folder = init_checkpoint(source)
    trained = load_checkpoint(folder)
    theirs, ours = str(trained.config["name"]), str(model.config["name"])
    if family(theirs) != family(ours):
        raise SettingsError(
            f"--init {source}: a {theirs} run; its weights do not fit {ours} "
            f"(start {ours} from a run of {', '.join(_members(family(ours)))})"
        )
    report = InitReport(folder, theirs)
    state = model.state_dict()
    given = trained.state_dict()
    for name, tensor in state.items():
        other = given.get(name)
        if other is not None and other.shape == tensor.shape:
            state[name] = other.to(dtype=tensor.dtype)
            report.copied.append(name)
        elif not name.endswith("num_batches_tracked"):
            report.fresh.append(name)
    model.load_state_dict(state)
    return report


def _members(name: str) -> list[str]:
    return [model for model, fam in FAMILIES.items() if fam == name]

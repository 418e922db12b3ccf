"""Explanations of a model's decision: which regions of a coin drive a match or a class.

Every method explains a `Target`: a differentiable score of float B×3×H×W images in [0, 1]
(the model's ImageNet normalisation is applied inside), so the same code explains an embedding
model (cosine similarity to the matched image), a classifier (the class probability), or the
identity margin of an embedding model (similarity to the matched image minus the highest
similarity to rival images, such as other coins struck from the same dies).

Why the margin: the similarity of a query to its own catalog image is mostly carried by the die
design, which every coin struck from those dies shares, so a map of it shows the design. What
tells this coin from its die-siblings is what lifts it above them: the margin.
"""

from training.explain.explanation import METHODS, Explanation, explain_match
from training.explain.targets import (
    Baseline,
    ScoreKind,
    Target,
    background_baseline,
    baseline_image,
    class_target,
    margin_target,
    similarity_target,
    to_tensor,
)

__all__ = [
    "METHODS",
    "Baseline",
    "Explanation",
    "ScoreKind",
    "Target",
    "background_baseline",
    "baseline_image",
    "class_target",
    "explain_match",
    "margin_target",
    "similarity_target",
    "to_tensor",
]

"""Named training recipes: the paper's official one, and one calibrated for the embedded ``mma-tiny``.

``paper`` is SPEC.md section 3 (the :class:`~mma.adapters.train.TrainConfig` defaults). Under its gradient
scaling the adapter weights learn as if alpha were 1, so how far the branch ``alpha * a`` moves in 5 epochs
depends on the size of the backbone's gradients: the official lr 0.0015 and alpha 0.001 are calibrated for
ViT-B/16 (768/512-wide towers, 197 tokens, hundreds of steps per dataset). On the embedded ``mma-tiny``
(128 wide, 65 tokens, about 25 steps per dataset) that recipe leaves every prediction unchanged (measured:
base and novel accuracy equal zero-shot to 0.1 points), so a k sweep would be flat.

``mma-tiny`` makes the adapter matter on the small model: alpha 0.1, lr 0.01, 10 epochs, and no
random-resized-crop zoom or horizontal flip (the model was pretrained on unzoomed 32 px images with small
shifts, where a 0.08-area crop keeps about 9 px, and flipping changes letters, digits and arrows). It is not
tuned to make MMA look good: on the built-in suite it is close to neutral (see the README for why).

``auto`` (the CLI default) picks ``mma-tiny`` for the embedded model and ``paper`` for every other model;
the recipe that ran is printed and saved with every result.
"""

from __future__ import annotations

from mma.errors import MmaError

__all__ = ["RECIPES", "resolve_recipe"]

RECIPES: dict[str, dict] = {
    "paper": {},
    "mma-tiny": {"alpha": 0.1, "lr": 0.01, "epochs": 10, "crop_scale_min": 1.0, "flip": False},
}


def resolve_recipe(name: str, model_name: str) -> tuple[str, dict]:
    """``(recipe name, TrainConfig overrides)``; ``auto`` = ``mma-tiny`` for the embedded model, else ``paper``."""
    from mma.probe.embedded import EMBEDDED_NAME

    if name == "auto":
        name = "mma-tiny" if model_name.split(":")[0] == EMBEDDED_NAME else "paper"
    if name not in RECIPES:
        raise MmaError(f"--recipe {name!r} is not valid (valid: auto, {', '.join(RECIPES)}).")
    return name, dict(RECIPES[name])

"""Depth: where a layer-deep method starts, per tower, in the one currency the probes speak.

The probes choose a *start block* (1-based): the first block a method should change, ``k`` shared by both towers
and ``k_image`` / ``k_text`` per tower (:mod:`mma.analysis.select_k`). Every layer-deep method (MMA, MMA++, MaPLe,
PromptSRC, MMRL, CLIP-LoRA) takes its depth as these three options (:class:`DepthOptions`) and maps them onto its
own knob, which it declares (``MethodBase.depth_knob`` and ``MethodBase.depth_label``):

=================  ==================================================================================
method             its knob at start block ``k_m`` of a tower with ``L_m`` blocks
=================  ==================================================================================
MMA, MMA++         adapters on blocks ``k_m..L_m`` (the start block itself)
MMRL               representation tokens from layer ``k_m`` on (its "start layer")
CLIP-LoRA          LoRA on the attention of blocks ``k_m..L_m`` (its layer set; ``k_m = 1``: "all")
MaPLe, PromptSRC   **[ours]** learned prompts in the first ``L_m - k_m + 1`` blocks (its prompt depth): as many
                   blocks as the probes leave to adapt above ``k_m``; their published depth 9 is ``k = 4``
=================  ==================================================================================

``k_image`` / ``k_text`` of None follow ``k``: on towers of equal depth the tower starts at ``k``; on towers of
different depth ``k`` counts blocks of the shallower tower and each tower starts at the same relative depth,
``ceil((k - 1) * L_m / L_min) + 1`` (MMA's ``depth_mode="relative"``). A method whose towers cannot start apart
(MaPLe couples its vision prompts to its text prompts) says so (``per_tower = False``) and refuses different ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mma.errors import MmaError

from .config import Options

__all__ = ["DepthOptions", "DEPTH_FIELDS", "FOLLOW_K", "relative_start", "tower_starts", "depth_key", "check_starts"]

#: the depth options every layer-deep method reads, in this order
DEPTH_FIELDS = ("k", "k_image", "k_text")
#: the options that follow k when None (lines leave them out then)
FOLLOW_K = DEPTH_FIELDS[1:]
_TOWERS = ("image", "text")


@dataclass
class DepthOptions(Options):
    """The start blocks of a layer-deep method (module doc); subclass it for the method's own options."""

    k: int = 5
    k_image: int | None = None  # None: follow k
    k_text: int | None = None

    def checks(self) -> list[tuple[str, bool, str]]:
        return [
            ("k", self.k >= 1, "an integer >= 1 (a block number, 1-based)"),
            ("k_image", self.k_image is None or self.k_image >= 1, "an integer >= 1 or null (follow k)"),
            ("k_text", self.k_text is None or self.k_text >= 1, "an integer >= 1 or null (follow k)"),
        ]


def relative_start(k: int, depth: int, min_depth: int) -> int:
    """The block of a tower with *depth* blocks that starts where block *k* of the shallower tower starts."""
    return -(-(k - 1) * depth // min_depth) + 1  # ceil((k-1) * L_m / L_min) + 1, in integers


def tower_starts(values: Mapping[str, Any], depths: Mapping[str, int]) -> dict[str, int]:
    """``{"image": k_image, "text": k_text}``: each tower's first changed block for these option values."""
    min_depth = min(depths[t] for t in _TOWERS)
    return {t: int(values.get(f"k_{t}") or relative_start(int(values["k"]), depths[t], min_depth)) for t in _TOWERS}


def depth_key(values: Mapping[str, Any]) -> str:
    """The depth part of a result's name: ``k5``, or ``ki3-kt7`` when a tower's start is given apart."""
    if values.get("k_image") is None and values.get("k_text") is None:
        return f"k{values['k']}"
    parts = [f"k{t[0]}{values[f'k_{t}']}" for t in _TOWERS if values.get(f"k_{t}") is not None]
    if len(parts) < 2:
        parts.insert(0, f"k{values['k']}")
    return "-".join(parts)


def check_starts(
    method: str, values: Mapping[str, Any], depths: Mapping[str, int], model_name: str, per_tower: bool
) -> dict[str, int]:
    """Each tower's start block, or one sentence: out of the tower's blocks, or apart for a method that cannot."""
    min_depth = min(depths[t] for t in _TOWERS)
    k = values["k"]
    if not 1 <= k <= min_depth:
        where = (
            f"{model_name}, whose towers have {min_depth} blocks"
            if depths["image"] == depths["text"]
            else f"the shallower tower of {model_name}, which has {min_depth} blocks (k counts its blocks)"
        )
        raise MmaError(f"k={k!r} is out of range for {where} (valid: 1..{min_depth}).")
    for t in _TOWERS:
        own = values.get(f"k_{t}")
        if own is not None and not 1 <= own <= depths[t]:
            raise MmaError(
                f"k_{t}={own!r} is out of range for the {t} tower of {model_name}, which has {depths[t]} blocks "
                f"(valid: 1..{depths[t]}, or none to follow k)."
            )
    starts = tower_starts(values, depths)
    if not per_tower and (values.get("k_image") is not None or values.get("k_text") is not None):
        if _apart(starts, depths):
            raise MmaError(
                f"{method} starts both towers at one depth (k_image={values.get('k_image')}, "
                f"k_text={values.get('k_text')} given); give k alone (valid: --k)."
            )
    return starts


def _apart(starts: Mapping[str, int], depths: Mapping[str, int]) -> bool:
    """Whether the towers' starts differ in relative depth."""
    return (starts["image"] - 1) * depths["text"] != (starts["text"] - 1) * depths["image"]

"""The zero-shot model as a method: the frozen model with the dataset's prompt, nothing trained.

It is every comparison's baseline (the papers' "CLIP" rows): it runs beside every other method, once per task
and without a seed (the frozen model has none), through the same evaluation code as MMA's hooked model. Like the
published CLIP rows it reads each dataset's published zero-shot prompt where the data source knows one (CoOp's
per-dataset templates on ``coop:`` data, ``"a centered satellite photo of {}."`` for EuroSAT, ...); elsewhere, and
under ``--template``, the same prompt as every other method.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from .method_base import MethodBase, freeze, whole_image_tower

__all__ = ["ZeroShot"]


class ZeroShot(MethodBase):
    """The frozen model (0 trainable parameters); its classifier is the zero-shot code's."""

    name: ClassVar[str] = "zeroshot"
    title: ClassVar[str] = "zero-shot"
    uses: ClassVar[tuple[str, ...]] = ()
    trains: ClassVar[bool] = False
    published_as: ClassVar[str] = "CLIP"
    published_prompts: ClassVar[bool] = True  # CoOp's trainers/zsclip.py CUSTOM_TEMPLATES
    colour: ClassVar[str] = "#7f7f7f"  # grey: the baseline

    @classmethod
    def run_key(cls, seed, k) -> str:
        return cls.name  # one result per task: the frozen model has no seed

    def config(self) -> dict[str, Any]:
        return {"method": self.name}

    @classmethod
    def build(cls, loaded, cfg=None, classnames=()) -> ZeroShot:
        freeze(loaded.model)
        return cls()

    @classmethod
    def restore(cls, config: Mapping[str, Any], loaded) -> ZeroShot:
        return cls.build(loaded)

    def image_start(self, loaded) -> int:
        return whole_image_tower(loaded)

    def classifier(self, loaded, classnames, template, device):
        """None: the model as it is, evaluated by the zero-shot code."""
        return None

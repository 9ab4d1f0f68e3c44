"""Dataset sources, one spec string each, and the CoOp few-shot / base-novel rules.

=======================  ===================================================================
spec                     what it reads
=======================  ===================================================================
``builtin``              the built-in offline suite (all datasets)
``builtin:A,B``          some of them
``coop:ROOT``            every CoOp dataset found under ROOT (CoOp's DATASETS.md layout)
``coop:ROOT:A,B``        some of them
``folder:PATH``          an image-folder tree, one subfolder per class (optional train/val/test)
``csv:PATH``             a CSV manifest with columns path, label[, split]
=======================  ===================================================================
"""

from __future__ import annotations

from mma.data_spec import DatasetSpec, parse_data_spec, user_path

from .base import DEFAULT_TEMPLATE, SPLITS, ImageDataset, Sample, clean_classname
from .coop import COOP_SHIFTS, describe_coop, load_coop
from .fewshot import FewShot, draw_few_shot, sample_per_label, split_base_novel, subsample_classes
from .folder import load_csv, load_folder
from .reading import ImageReader, ReadReport

# The built-in suite (mma.probe.embedded.suite) is imported inside the functions below, lazily: it builds on
# .base, so loading it here would be a circle (suite -> mma.probe.data.base -> this package -> suite) that
# breaks `import mma.probe.embedded.suite` when that comes first.

__all__ = [
    "DEFAULT_TEMPLATE",
    "SPLITS",
    "DatasetSpec",
    "FewShot",
    "ImageDataset",
    "ImageReader",
    "ReadReport",
    "Sample",
    "clean_classname",
    "dataset_spec",
    "default_data",
    "default_shift_data",
    "draw_few_shot",
    "list_dataset_sources",
    "load_datasets",
    "parse_data_spec",
    "sample_per_label",
    "shifted_variants",
    "split_base_novel",
    "subsample_classes",
]

#: the data spec a job reads when none is given: the embedded downstream suite
DEFAULT_DATA = "builtin"


def load_datasets(
    spec: str | DatasetSpec, *, template: str | None = None, image_size: int | None = None
) -> list[ImageDataset]:
    """Every dataset a spec names, each with its splits, class names and loader."""
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    if spec.kind == "builtin":
        from mma.probe.embedded.suite import load_builtin  # lazy: the circle at the top

        kwargs = {"image_size": image_size} if image_size else {}
        datasets = load_builtin(list(spec.names) if spec.names else None, spec=str(spec), **kwargs)
    elif spec.kind == "coop":  # not a method: the CoOp data source
        datasets = load_coop(spec.root, list(spec.names) if spec.names else None, spec=str(spec))
    elif spec.kind == "folder":
        datasets = [load_folder(spec.root, spec=str(spec))]
    else:
        datasets = [load_csv(spec.root, spec=str(spec))]
    if template is not None:
        for d in datasets:
            d.prompts(template)  # validates the template
            d.template = template
            d.published_template = None  # the user's prompt, for every method
    return datasets


def dataset_spec(dataset: ImageDataset, spec: str | DatasetSpec) -> str:
    """The data spec that loads exactly *dataset* again, from anywhere: *spec* (the one it came from) with its
    root made absolute and, for sources of several datasets (builtin, coop), narrowed to this one.
    """
    if isinstance(spec, str):
        spec = parse_data_spec(spec)
    root = None
    if spec.root is not None:
        root = str(user_path(spec.root, "The data root").absolute())
    names = (dataset.name,) if spec.kind in ("builtin", "coop") else None  # not a method: data sources
    return str(DatasetSpec(spec.kind, root, names))


def list_dataset_sources() -> list[dict]:
    """One row per known source: the built-in datasets (with sizes) and the CoOp datasets."""
    from mma.probe.embedded.suite import describe_builtin  # lazy: the circle at the top

    return [{"kind": "builtin", **row} for row in describe_builtin()] + [
        {"kind": "coop", **row} for row in describe_coop()
    ]


def shifted_variants(name: str) -> tuple[str, ...]:
    """The shifted variants of dataset *name* that its source knows (CoOp's ImageNet: V2 / Sketch / A / R; the
    built-in suite's ImageNet stand-in ``objects``: its four variants); ``()`` for any other dataset."""
    from mma.probe.embedded.suite import DOMAIN_SHIFTS  # lazy: the circle at the top

    return {**COOP_SHIFTS, **DOMAIN_SHIFTS}.get(name, ())


def default_data() -> str:
    """The data spec read when ``--data`` is not given: the built-in downstream suite (its source first)."""
    return DEFAULT_DATA


def default_shift_data() -> str:
    """The default data of domain generalisation: the built-in suite's source and its shifted variants."""
    from mma.probe.embedded.suite import SOURCE  # lazy: the circle at the top

    return f"{DEFAULT_DATA}:{','.join((SOURCE, *shifted_variants(SOURCE)))}"

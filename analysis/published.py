"""The published numbers MMA is compared with, shipped as package data (``published_numbers.csv``).

One tidy row per published cell: ``protocol, method, dataset, metric, value, source, check, checked_against,
note``, ViT-B/16, 16 shots, mean of seeds 1-3 (``published_numbers.md`` beside the CSV says it in full):

* ``source``: where the value was first taken from (``readme``: printed in an official repository's README, named
  in ``checked_against``: MMA's, PromptSRC's, MMA++'s; ``recalled``: written from memory of the papers);
* ``check``: how the cell was then verified against printed tables: ``confirmed`` (308 cells), ``secondary`` /
  ``secondary-weak`` (read off reprints), ``unconfirmed`` (no second source found) or ``printed-differs`` (reprints
  print another value, given in ``note``); every printed table shows it beside the published cell.

Dataset names are the toolkit's CoOp names (:data:`mma.probe.data.coop.COOP_DATASETS`); ``average`` is the
papers' average (base-to-novel: HM of the averaged base and novel; cross-dataset and domain generalisation:
the targets only), and ``accuracy (source)`` is the source dataset (ImageNet) itself.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import pandas as pd

__all__ = ["PUBLISHED_FILE", "published_numbers", "published_method"]

PUBLISHED_FILE = "published_numbers.csv"
COLUMNS = ["protocol", "method", "dataset", "metric", "value", "source", "check", "checked_against", "note"]


@cache
def _table() -> pd.DataFrame:
    with resources.files("mma.analysis").joinpath(PUBLISHED_FILE).open("r", encoding="utf-8") as f:
        table = pd.read_csv(f, dtype={"value": float}, keep_default_na=False)
    if list(table.columns) != COLUMNS:
        raise ValueError(f"{PUBLISHED_FILE} has columns {list(table.columns)}; expected {COLUMNS}")
    return table


def published_numbers() -> pd.DataFrame:
    """The published table (a copy): protocol, method, dataset, metric, value (float, %), source, check,
    checked_against, note."""
    return _table().copy()


def _key(name: str) -> str:
    """*name* for the loose match: lower case, punctuation dropped but pluses kept (``MMA++`` is not ``MMA``)."""
    return re.sub(r"[^a-z0-9+]", "", name.lower())


def published_method(method: str) -> str | None:
    """The published name of one of the toolkit's methods (``mma`` -> ``MMA``, ``mma++`` -> ``MMA++``, ``cocoop`` ->
    ``CoCoOp``, ...), matched case- and punctuation-insensitively (but not plus-insensitively); None if nothing is
    published. (The zero-shot model's published name, ``CLIP``, is not its own: it says so itself,
    ``published_as``.)"""
    names = {_key(m): m for m in _table()["method"].unique()}
    return names.get(_key(method))

"""Job: every registered method, built in or from a plugin, described (``mma methods``)."""

from __future__ import annotations

import inspect

from mma.adapters.methods import BUILT_IN, registry
from mma.probe.embedded import EMBEDDED_NAME
from mma.probe.specs import load_model

__all__ = ["list_methods", "SIZE_K", "SIZE_CLASSES"]

SIZE_K = 5  # the depth a method without a published base-to-novel k is sized at (MMA's)
SIZE_CLASSES = 10  # the classes a method is sized for (the linear probe's size grows with them)


def list_methods(model: str = EMBEDDED_NAME) -> list[dict]:
    """One row per method: its name, where it comes from, whether it trains and has a depth, its own options at
    its published values (a method with a depth at its published base-to-novel k), and its trainable parameters on
    *model* (default: the embedded one)."""
    loaded = load_model(model)
    classnames = [f"class {i}" for i in range(SIZE_CLASSES)]
    rows = []
    for name, method in registry().items():
        values = method.published_values()
        if method.depth_indexed:
            values["k"] = method.published_k("base2novel") or SIZE_K
        cfg = method.make_config(values)
        options = ", ".join(f"{o}={_show(values[o])}" for o in method.option_names()) or "-"
        built = method.build(loaded, cfg, classnames)
        rows.append(
            {
                "method": name,
                "from": "built in" if method in BUILT_IN else inspect.getmodule(method).__name__.split(".")[0],
                "trains": "yes" if method.trains else "no",
                "depth (k)": _depth(method),
                "options (published values)": options,
                "parameters": f"{built.num_parameters():,}",
            }
        )
    return rows


def _depth(method) -> str:
    """Whether the method has a depth, its own word for it, and whether its towers may start apart."""
    if not method.depth_indexed:
        return "no"
    return f"{method.depth_knob} ({'per tower' if method.per_tower else 'both towers together'})"


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)

"""The one harmonic mean every floor uses (base-to-novel's HM = 2BN / (B + N))."""

from __future__ import annotations

__all__ = ["harmonic_mean"]


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2 * base * novel / (base + novel)

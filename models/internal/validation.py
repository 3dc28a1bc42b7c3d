"""Parameter checks in one place, each with a message that says what to change."""

from __future__ import annotations

from collections.abc import Sequence

from models.errors import UsageError


def check_positive_int(value: int, option: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return value


def check_non_negative_int(value: int, option: str) -> int:
    return check_positive_int(value, option, minimum=0)


def check_positive_float(value: float, option: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be a number, got {value!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise UsageError(f"{option} must be a positive number, got {value!r}")
    return v


def check_fraction(value: float, option: str, *, open_low: bool = True) -> float:
    v = float(value)
    low_ok = v > 0 if open_low else v >= 0
    if not (low_ok and v < 1):
        bound = "(0, 1)" if open_low else "[0, 1)"
        raise UsageError(f"{option} must be in {bound}, got {value!r}")
    return v


def check_threshold(value: float, option: str = "--threshold") -> float:
    """A decision threshold: a probability in [0, 1] (``p >= t`` is the positive class)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise UsageError(f"{option} must be in [0, 1], got {value}")
    return v


def check_choice(value: str, option: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_image_size(value: int | str | Sequence[int] | None) -> tuple[int, int] | None:
    """``224``, ``"224"``, ``"224x192"`` (height x width) or ``(h, w)`` -> ``(h, w)``."""
    if value is None:
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.lower().replace(",", "x").split("x")]
        elif isinstance(value, int):
            parts = [value]
        else:
            parts = [int(p) for p in value]
    except (TypeError, ValueError):
        raise UsageError(
            f"--image-size must be N or HxW (e.g. 224 or 224x192), got {value!r}"
        ) from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise UsageError(f"--image-size must be N or HxW (e.g. 224 or 224x192), got {value!r}")
    return parts[0], parts[1]


def parse_units(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"128,64"`` -> ``(128, 64)``."""
    if value is None or value == "":
        return None
    try:
        units = tuple(
            int(v) for v in (value.split(",") if isinstance(value, str) else value) if str(v)
        )
    except (TypeError, ValueError):
        raise UsageError(
            f"--head-units must be comma-separated integers (e.g. 128,64), got {value!r}"
        ) from None
    if not units or min(units) < 1:
        raise UsageError(f"--head-units must be positive integers, got {value!r}")
    return units


def parse_class_names(value: str | Sequence[str] | None) -> tuple[str, str] | None:
    """``"female,male"`` -> ``("female", "male")``: exactly two distinct names."""
    if value is None:
        return None
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UsageError(
            f"--class-names must be two distinct names in output order (e.g. female,male),"
            f" got {value!r}"
        )
    return names[0], names[1]

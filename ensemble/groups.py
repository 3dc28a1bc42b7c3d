"""Error rates by subgroup (age band, race, any column), with bootstrap intervals and gaps.

Pure functions over plain arrays: a column's values become group labels (numeric columns
banded by edges, text taken as it is, nulls a ``missing`` group, groups too small to say
anything pooled into ``other``); per group and per score, accuracy, FAR, FRR and AUC with
intervals stratified within the group (the machinery of :mod:`ensemble.bootstrap`); the gap
between the worst and the best group; and the threshold search under a ceiling on that gap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ensemble.bootstrap import bootstrap_auc, bootstrap_rates, check_bootstrap, interval
from ensemble.thresholds import (
    Objective,
    ThresholdChoice,
    choice_at,
    choose_index,
    objective_values,
)
from models.errors import DataError, UsageError
from models.metrics import operating_points

MISSING = "missing"
OTHER = "other"
DEFAULT_MIN_GROUP = 30
GAP_RATES = ("far", "frr")
#: A column of numbers with more distinct values than this must be banded (--bands).
MAX_LEVELS = 20
_BANDS_EXAMPLE = "age=0,18,40,60,200"


# --- options: every check of --group-by, --bands, --min-group, --max-gap in one place -------


@dataclass(frozen=True)
class GapLimit:
    """``--max-gap far=X``: the largest FAR (or FRR) gap between groups allowed."""

    rate: str
    limit: float

    def __str__(self) -> str:
        return f"{self.rate}={self.limit:g}"


@dataclass(frozen=True)
class AuditOptions:
    """Which columns to group by, their band edges, the smallest group, the gap ceiling."""

    group_by: tuple[str, ...]
    bands: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    min_group: int = DEFAULT_MIN_GROUP
    max_gap: GapLimit | None = None


def audit_options(
    group_by: Sequence[str],
    bands: Sequence[str] = (),
    min_group: int = DEFAULT_MIN_GROUP,
    max_gap: str | None = None,
) -> AuditOptions | None:
    """The options checked together, each problem a one-line UsageError; None without
    ``group_by`` (and nothing that needs it)."""
    columns = tuple(c.strip() for c in group_by)
    if any(not c for c in columns):
        raise UsageError("--group-by needs a column name, e.g. --group-by race")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise UsageError(f"--group-by names {', '.join(twice)} twice: give each column once")
    edges: dict[str, tuple[float, ...]] = {}
    for text in bands:
        column, values = parse_bands(text)
        if column in edges:
            raise UsageError(f"--bands is given twice for {column!r}: keep one edge list")
        if column not in columns:
            raise UsageError(
                f"--bands {text}: {column!r} is not grouped by; add --group-by {column}"
            )
        edges[column] = values
    if isinstance(min_group, bool) or not isinstance(min_group, int) or min_group < 1:
        raise UsageError(f"--min-group must be a whole number of rows >= 1, got {min_group!r}")
    limit = parse_max_gap(max_gap) if max_gap is not None else None
    if not columns:
        if limit is not None:
            raise UsageError("--max-gap needs --group-by COLUMN: the groups whose gap it limits")
        return None
    return AuditOptions(group_by=columns, bands=edges, min_group=min_group, max_gap=limit)


def parse_bands(text: str) -> tuple[str, tuple[float, ...]]:
    """``age=0,18,40,60,200`` -> ``("age", (0, 18, 40, 60, 200))``: finite, increasing."""
    column, sep, raw = str(text).partition("=")
    column = column.strip()
    if not sep or not column or not raw.strip():
        raise UsageError(f"--bands {text!r}: give COLUMN=EDGES, e.g. {_BANDS_EXAMPLE}")
    edges = []
    for item in raw.split(","):
        try:
            value = float(item)
        except ValueError:
            raise UsageError(
                f"--bands {text}: edge {item.strip()!r} is not a number; e.g. {_BANDS_EXAMPLE}"
            ) from None
        if not math.isfinite(value):
            raise UsageError(f"--bands {text}: edge {item.strip()!r} is not a finite number")
        edges.append(value)
    if len(edges) < 2:
        raise UsageError(
            f"--bands {text}: give at least two edges (each band is [edge, next edge)), "
            f"e.g. {_BANDS_EXAMPLE}"
        )
    for a, b in zip(edges, edges[1:], strict=False):
        if b <= a:
            raise UsageError(
                f"--bands {text}: edges must be increasing, but {b:g} follows {a:g}; "
                f"e.g. {_BANDS_EXAMPLE}"
            )
    return column, tuple(edges)


def parse_max_gap(text: str) -> GapLimit:
    """``far=0.05`` | ``frr=0.05``: the rate and the largest gap allowed, in [0, 1]."""
    rate, sep, raw = str(text).strip().lower().partition("=")
    rate = rate.strip()
    hint = "use far=X or frr=X with X a rate in [0, 1], e.g. far=0.02"
    if rate not in GAP_RATES or not sep:
        raise UsageError(f"--max-gap {text!r}: {hint}")
    try:
        limit = float(raw)
    except ValueError:
        raise UsageError(f"--max-gap {text!r}: {raw.strip()!r} is not a number; {hint}") from None
    if not (math.isfinite(limit) and 0.0 <= limit <= 1.0):
        raise UsageError(f"--max-gap {text!r}: the gap must be in [0, 1]; {hint}")
    return GapLimit(rate, limit)


# --- groups: labels, bands, pooling ----------------------------------------------------------


@dataclass(frozen=True)
class Grouping:
    """Every row's group for one column, the groups in display order, and what was pooled."""

    column: str
    labels: np.ndarray
    order: tuple[str, ...]
    pooled: tuple[str, ...] = ()
    pooled_into: str | None = None
    min_group: int = DEFAULT_MIN_GROUP
    edges: tuple[float, ...] | None = None

    def sizes(self) -> dict[str, int]:
        return {g: int((self.labels == g).sum()) for g in self.order}

    def notes(self) -> list[str]:
        """What a reader must know to read this grouping's table."""
        sizes, out = self.sizes(), []
        if self.pooled:
            out.append(
                f"groups under {self.min_group} rows ({', '.join(self.pooled)}) are pooled "
                f"into {self.pooled_into!r} ({_rows(sizes[self.pooled_into])})"
            )
        small = [g for g, n in sizes.items() if n < self.min_group]
        if small:
            out.append(
                f"{', '.join(f'{g} ({_rows(sizes[g])})' for g in small)}: under "
                f"{self.min_group} rows even pooled; shown, left out of the gaps"
            )
        return out


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def make_grouping(
    column: str,
    values: Sequence | np.ndarray,
    *,
    edges: Sequence[float] | None = None,
    min_group: int = DEFAULT_MIN_GROUP,
) -> Grouping:
    """Group labels of ``values`` (banded by ``edges`` if given), small groups pooled."""
    labels, order = group_labels(column, values, edges)
    labels, order, pooled, pooled_into = pool_small(labels, order, min_group)
    return Grouping(
        column=column,
        labels=labels,
        order=tuple(order),
        pooled=tuple(pooled),
        pooled_into=pooled_into,
        min_group=min_group,
        edges=tuple(edges) if edges is not None else None,
    )


def group_labels(
    column: str, values: Sequence | np.ndarray, edges: Sequence[float] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Each value's group name and the names in display order (``missing`` last).

    Nulls, NaN and blank text are ``missing``. With ``edges``, values are numbers banded into
    ``[a, b)`` (below the first edge ``< a``, from the last one on ``>= b``); without, each
    value is its own group, ordered as numbers when they all are numbers.
    """
    values = list(values)
    absent = np.array([_is_missing(v) for v in values], dtype=bool)
    labels = np.full(len(values), MISSING, dtype=object)
    present = [v for v, a in zip(values, absent, strict=True) if not a]
    if edges is not None:
        names, order = _banded(column, present, list(edges))
    else:
        names, order = _levels(column, present)
    labels[~absent] = names
    order = [g for g in order if (labels == g).any()]
    if absent.any():
        order.append(MISSING)
    return labels, order


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(value != value)  # pandas NA and friends
    except (TypeError, ValueError):
        return False


def _number(value) -> float | None:
    if isinstance(value, bool | np.bool_):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fmt(x: float) -> str:
    return f"{x:g}"


def _banded(column: str, values: list, edges: list[float]) -> tuple[list[str], list[str]]:
    numbers = np.empty(len(values))
    for i, v in enumerate(values):
        number = _number(v)
        if number is None:
            raise DataError(
                f"column {column!r} holds {v!r}, not a number: --bands needs a numeric column "
                f"(drop --bands {column}=... to group by its values as they are)"
            )
        numbers[i] = number
    names = [f"< {_fmt(edges[0])}"]
    names += [f"[{_fmt(a)}, {_fmt(b)})" for a, b in zip(edges, edges[1:], strict=False)]
    names += [f">= {_fmt(edges[-1])}"]
    index = np.searchsorted(np.asarray(edges), numbers, side="right")
    return [names[i] for i in index], names


def _levels(column: str, values: list) -> tuple[list[str], list[str]]:
    names = [_text(v) for v in values]
    distinct = sorted(set(names))
    numbers = {n: _number(n) for n in distinct}
    if distinct and all(x is not None for x in numbers.values()):
        if len(distinct) > MAX_LEVELS:
            raise UsageError(
                f"column {column!r} holds {len(distinct)} different numbers: band it with "
                f"--bands {column}=EDGES (increasing), e.g. {_BANDS_EXAMPLE}"
            )
        distinct.sort(key=lambda n: numbers[n])
    return names, distinct


def _text(value) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def pool_small(
    labels: np.ndarray, order: Sequence[str], min_group: int
) -> tuple[np.ndarray, list[str], list[str], str | None]:
    """Groups under ``min_group`` rows relabeled into one pooled group (``other``, or
    ``other (pooled)`` if the data has an ``other`` of its own), placed before ``missing``.

    Returns the labels, the order, the groups pooled and the pooled group's name."""
    sizes = {g: int((labels == g).sum()) for g in order}
    small = [g for g in order if sizes[g] < min_group]
    if not small:
        return labels, list(order), [], None
    name = OTHER if OTHER not in sizes or OTHER in small else f"{OTHER} (pooled)"
    labels = labels.copy()
    labels[np.isin(labels, small)] = name
    kept = [g for g in order if g not in small and g != name]
    tail = [MISSING] if MISSING in kept else []
    return labels, [g for g in kept if g != MISSING] + [name] + tail, small, name


# --- per-group metrics, intervals and gaps ---------------------------------------------------


def group_table(
    y: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    grouping: Grouping,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Per group at ``threshold``: rows per class, accuracy, FAR, FRR and AUC each with its
    bootstrap interval (rows resampled within group and class), and the FAR and FRR gaps."""
    check_bootstrap(n_boot, level)
    y, s = np.asarray(y), np.asarray(scores, dtype=np.float64)
    if len(y) != len(grouping.labels) or len(s) != len(y):
        raise DataError(
            f"{len(grouping.labels)} group labels for {len(y)} labels and {len(s)} scores"
        )
    rows, boots = [], {}
    for k, g in enumerate(grouping.order):
        m = grouping.labels == g
        reps = bootstrap_rates(y[m], s[m], threshold, n_boot=n_boot, seed=(seed, k))
        n_pos = int(y[m].sum())
        row = {"group": g, "n": int(m.sum()), "n_negative": int(m.sum()) - n_pos}
        row["n_positive"] = n_pos
        for key in ("accuracy", "far", "frr"):
            row[key] = interval(reps.point[key], reps.boot[key], level)
        row["auc"] = bootstrap_auc(y[m], s[m], n_boot=n_boot, level=level, seed=(seed, k, 1))
        row["one_class"] = n_pos in (0, row["n"])
        row["in_gaps"] = row["n"] >= grouping.min_group
        rows.append(row)
        boots[g] = reps.boot
    gaps = {rate: rate_gap(rows, boots, rate, level) for rate in GAP_RATES}
    return {"threshold": float(threshold), "groups": rows, "gaps": gaps}


def rate_gap(rows: list[dict], boots: Mapping[str, Mapping], rate: str, level: float) -> dict:
    """The worst minus the best group's ``rate`` (groups ``in_gaps`` with the rate defined).

    Its interval is the percentile interval of that difference over the replicates, at a
    Bonferroni level over all pairs of groups compared (1 - (1 - level) / pairs): the pair is
    picked on the same data, so a per-pair 95% interval would exclude 0 too often when
    there is no gap; over all pairs at once it does so in at most 1 - level of data sets.
    """
    points = {r["group"]: r[rate]["estimate"] for r in rows if r["in_gaps"]}
    points = {g: v for g, v in points.items() if math.isfinite(v)}
    out = {"rate": rate, "groups_compared": len(points)}
    if len(points) < 2:
        return out | {
            "gap": None,
            "note": "fewer than two groups with enough rows of the class to compare",
        }
    worst = max(points, key=lambda g: points[g])
    best = min((g for g in points if g != worst), key=lambda g: points[g])
    pairs = len(points) * (len(points) - 1) // 2
    gap_level = 1 - (1 - level) / pairs
    diff = np.asarray(boots[worst][rate]) - np.asarray(boots[best][rate])
    ci = interval(points[worst] - points[best], diff, gap_level)
    return out | {
        "gap": ci["estimate"],
        "low": ci["low"],
        "high": ci["high"],
        "level": gap_level,
        "worst": worst,
        "best": best,
        "worst_value": points[worst],
        "best_value": points[best],
        "excludes_zero": bool(ci["low"] > 0),
    }


def audit(
    y: np.ndarray,
    scores: Mapping[str, tuple[np.ndarray, float]],
    groupings: Sequence[Grouping],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """:func:`group_table` of every score (name -> (P(positive), threshold)) under every
    grouping: ``{"by": {column: {"groups", "sizes", "pooled", "notes", "tables"}}}``."""
    by = {}
    for grouping in groupings:
        by[grouping.column] = {
            "bands": list(grouping.edges) if grouping.edges is not None else None,
            "min_group": grouping.min_group,
            "groups": list(grouping.order),
            "sizes": grouping.sizes(),
            "pooled": list(grouping.pooled),
            "notes": grouping.notes(),
            "tables": {
                name: group_table(y, s, t, grouping, n_boot=n_boot, level=level, seed=seed)
                for name, (s, t) in scores.items()
            },
        }
    return {
        "min_group": groupings[0].min_group if groupings else DEFAULT_MIN_GROUP,
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
        "method": "percentile bootstrap at the fixed threshold, stratified within group and "
        "class; gap intervals Bonferroni-adjusted over the pairs of groups compared",
        "by": by,
    }


# --- choosing the threshold under a gap ceiling ----------------------------------------------


def gap_curve(
    y: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, grouping: Grouping, rate: str
) -> np.ndarray:
    """The largest minus the smallest group ``rate`` at every threshold (``score >=
    threshold`` accepted), over the groups of at least ``min_group`` rows that have the
    rate's class; zeros when fewer than two groups qualify."""
    klass = 0 if rate == "far" else 1
    curves = []
    for g, n in grouping.sizes().items():
        m = (grouping.labels == g) & (y == klass)
        if n < grouping.min_group or not m.any():
            continue
        ranked = np.sort(scores[m])
        accepted = (len(ranked) - np.searchsorted(ranked, thresholds, side="left")) / len(ranked)
        curves.append(accepted if rate == "far" else 1.0 - accepted)
    if len(curves) < 2:
        return np.zeros(len(thresholds))
    stacked = np.vstack(curves)
    return stacked.max(axis=0) - stacked.min(axis=0)


@dataclass(frozen=True)
class GapChoice:
    """The threshold chosen under the gap ceiling, the gap there, and the unconstrained one."""

    choice: ThresholdChoice
    limit: GapLimit
    gaps: dict[str, float]
    unconstrained: ThresholdChoice
    unconstrained_gaps: dict[str, float]

    def to_json(self) -> dict:
        return {
            "max_gap": str(self.limit),
            "gaps": self.gaps,
            "value": self.choice.value,
            "unconstrained": {
                "threshold": self.unconstrained.threshold,
                "value": self.unconstrained.value,
                "gaps": self.unconstrained_gaps,
            },
            "note": "the gap ceiling holds on validation, over groups of at least --min-group "
            "rows; thresholds deciding one class for every row are not candidates",
        }


def select_threshold_within_gap(
    y: np.ndarray,
    scores: np.ndarray,
    objective: Objective,
    groupings: Sequence[Grouping],
    limit: GapLimit,
) -> GapChoice:
    """The threshold that best meets ``objective`` among those whose ``limit.rate`` gap is at
    most ``limit.limit`` under every grouping; UsageError naming the smallest gap reachable
    when none is."""
    y, s = np.asarray(y), np.asarray(scores, dtype=np.float64)
    points = operating_points(y, s)
    per_column = {g.column: gap_curve(y, s, points.thresholds, g, limit.rate) for g in groupings}
    gap = np.max(np.vstack(list(per_column.values())), axis=0)
    # accepting nothing (or everything) gives every group the same rate: a zero gap that
    # no one would ship, so those two points are never candidates here
    one_class = ((points.tp == 0) & (points.fp == 0)) | (
        (points.tp == points.n_pos) & (points.fp == points.n_neg)
    )
    meets = np.isfinite(objective_values(points, objective)) & ~one_class
    feasible = meets & (gap <= limit.limit + 1e-12)
    free = choose_index(points, objective)
    if not feasible.any():
        raise UsageError(_unreachable(objective, limit, gap, meets, [g.column for g in groupings]))
    i = choose_index(points, objective, allowed=feasible)
    return GapChoice(
        choice=choice_at(points, objective, i),
        limit=limit,
        gaps={c: float(v[i]) for c, v in per_column.items()},
        unconstrained=choice_at(points, objective, free),
        unconstrained_gaps={c: float(v[free]) for c, v in per_column.items()},
    )


def _unreachable(
    objective: Objective, limit: GapLimit, gap: np.ndarray, meets: np.ndarray, columns
) -> str:
    pool = meets if meets.any() else np.ones_like(meets)
    best = float(gap[pool].min())
    within = f" among thresholds meeting {objective}" if meets.any() else ""
    return (
        f"no threshold meets {objective} with a {limit.rate.upper()} gap <= {limit.limit:g} "
        f"between {', '.join(columns)} groups on validation: the smallest gap reachable"
        f"{within} is {best:.4f}; raise --max-gap to at least that or relax --objective"
    )

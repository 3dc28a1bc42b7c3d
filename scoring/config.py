"""``--config nightly.toml``: the options of a click command read from a TOML file.

Every option is a key under its long name with underscores (``batch_size = 16``); the values
become the command's ``default_map``, so a flag on the command line still wins. The file is
checked as a whole before any work: an unknown key or a value of the wrong type is one
UsageError naming the key (and, for an unknown key, the known ones). Relative paths in the
file are relative to the file's folder, not to where the command runs.
"""

from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any

import click

from models.errors import UsageError

#: Options whose values are local paths (or URIs, kept as they are).
PATH_KEYS = frozenset({"manifest", "models", "ensemble", "out", "root"})
#: Options that make no sense inside the file itself.
NOT_IN_FILE = frozenset({"config", "help"})
#: Repeated ``KEY=VALUE`` options that the file may also give as a table.
TABLE_KEYS = frozenset({"storage_options"})


def config_keys(command: click.Command) -> dict[str, click.Option]:
    """The keys a config file may hold for ``command``: its options by parameter name."""
    return {
        p.name: p
        for p in command.params
        if isinstance(p, click.Option) and p.name and p.name not in NOT_IN_FILE
    }


def read_config(path: str | os.PathLike[str], command: click.Command) -> dict[str, Any]:
    """The file's values, checked and with paths resolved, ready for ``ctx.default_map``."""
    file = Path(os.fspath(path)).expanduser()
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {file} does not exist") from None
    except IsADirectoryError:
        raise UsageError(f"config file {file} is a folder, not a TOML file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {file} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"config file {file} is not UTF-8 text") from None
    known = config_keys(command)
    base = file.absolute().parent
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            hint = f" (did you mean {key.replace('-', '_')}?)" if "-" in key else ""
            raise UsageError(
                f"config {file}: unknown key {key!r}{hint}; known keys: {', '.join(sorted(known))}"
            )
        value = _checked(key, value, known[key], file)
        if key in PATH_KEYS:
            value = (
                [_resolve(v, base) for v in value]
                if isinstance(value, list)
                else _resolve(value, base)
            )
        values[key] = value
    return values


def _checked(key: str, value: Any, option: click.Option, file: Path) -> Any:
    def bad(want: str) -> UsageError:
        return UsageError(
            f"config {file}: {key} must be {want}, got {value!r} ({_toml_type(value)})"
        )

    if option.is_flag and not option.multiple:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if option.multiple and key in TABLE_KEYS and isinstance(value, dict):
        if not all(isinstance(v, str | bool | int | float) for v in value.values()):
            raise bad("a table of KEY = VALUE (strings, numbers, booleans)")
        return [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in value.items()]
    if option.multiple:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise bad("a list of strings")
        return items
    kind = option.type
    if isinstance(value, bool) and not isinstance(kind, click.types.BoolParamType):
        raise bad(_describe(kind))
    if isinstance(kind, click.types.IntParamType):
        if not isinstance(value, int):
            raise bad("a whole number")
        return value
    if isinstance(kind, click.types.FloatParamType):
        if not isinstance(value, int | float):
            raise bad("a number")
        return float(value)
    if isinstance(kind, click.Choice):
        if value not in kind.choices:
            raise bad("one of " + ", ".join(repr(c) for c in kind.choices))
        return value
    if isinstance(value, date) and key == "run_date":
        return value.isoformat()
    if not isinstance(value, str):
        raise bad("a string")
    return value


def _describe(kind: click.ParamType) -> str:
    if isinstance(kind, click.types.IntParamType):
        return "a whole number"
    if isinstance(kind, click.types.FloatParamType):
        return "a number"
    return "a string"


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, date):
        return "a date"
    return type(value).__name__


def _resolve(value: str, base: Path) -> str:
    if "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)

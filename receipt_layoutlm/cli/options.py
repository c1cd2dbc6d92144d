"""Click options generated from TrainConfig's fields, so each train flag is defined once.

`@train_options()` gives a command one option per field (type, default, help, choices and
env variable from the field; lists become repeatable options, bools flags); the command
receives them as keyword arguments named like the fields, and `train_config(kwargs)` turns
them back into a TrainConfig. `train`, `dataset stats` and later commands share them.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields

import click

from ..training.config import TrainConfig


def _option(f, hint):
    meta = f.metadata
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    default = f.default_factory() if f.default_factory is not MISSING else f.default
    if default is MISSING:
        default = None
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the option is optional
        hint = next(a for a in args if a is not type(None))
    kwargs = {"help": meta.get("help"), "envvar": meta.get("envvar"), "required": meta.get("required", False)}
    if hint is bool:
        kwargs.update(is_flag=True, default=bool(default))
    elif typing.get_origin(hint) is list:
        kwargs.update(multiple=True, type=typing.get_args(hint)[0], default=default, show_default=bool(default))
    else:
        kwargs.update(default=default, show_default=default not in (None, ""))
        kwargs["type"] = click.Choice(meta["choices"]) if meta.get("choices") else hint
    return click.option(flag, f.name, **kwargs)


def train_options(only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()):
    """Decorator adding the TrainConfig options (all, or `only` these fields, minus `exclude`), in field order."""
    hints = typing.get_type_hints(TrainConfig)
    chosen = [f for f in fields(TrainConfig) if (only is None or f.name in only) and f.name not in exclude]
    unknown = (set(only or ()) | set(exclude)) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"not TrainConfig fields: {sorted(unknown)}")

    def decorate(command):
        for f in reversed(chosen):  # click lists options in the reverse order of decoration
            command = _option(f, hints[f.name])(command)
        return command

    return decorate


def train_config(values: dict, **overrides) -> TrainConfig:
    """The TrainConfig of a command's option values (repeatable options arrive as tuples)."""
    names = {f.name for f in fields(TrainConfig)}
    settings = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in names}
    return TrainConfig(**{**settings, **overrides})

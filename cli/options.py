"""Command-line options made from a config dataclass of charlstm.config.

A command decorated with `config_options(TrainConfig)` takes one option per field (the flag, type,
default and help text are the field's) besides its own parameters, and receives the options as
`config`, an instance of the dataclass, already checked: an option that cannot work is reported
before the command imports torch or reads any data. The options are written once, in
charlstm.config.
"""

import dataclasses
import functools
import inspect
import types
import typing
from typing import Annotated, Optional

import typer

from charlstm.config import flag


def _cli_type(hint):
    """`int | None` as typer reads it (Optional[int]); other hints as they are."""
    if typing.get_origin(hint) is types.UnionType:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return Optional[args[0]] if len(args) == 1 else str
    return hint


def config_options(config_class, exclude=()):
    """Give the decorated command an option for each field of `config_class` (except those in
    `exclude`), and call it with `config=config_class(**those options)`."""
    hints = typing.get_type_hints(config_class)
    chosen = [f for f in dataclasses.fields(config_class) if f.name not in exclude]

    def decorate(command):
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "config"]
        options = []
        for f in chosen:
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = inspect.Parameter.empty  # a required option
            info = typer.Option(flag(config_class, f.name), help=f.metadata.get("help", ""))
            options.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                             annotation=Annotated[_cli_type(hints[f.name]), info],
                                             default=default))

        @functools.wraps(command)
        def with_config(**kwargs):
            values = {f.name: kwargs.pop(f.name) for f in chosen}
            config = config_class(**values)
            config.check()
            return command(config=config, **kwargs)

        # The command's own parameters follow the config's options, in --help too.
        positional = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        with_config.__signature__ = inspect.Signature(options + positional)
        return with_config

    return decorate


def given(ctx: typer.Context, config_class, exclude=()) -> dict:
    """The config fields that were given on the command line, with their values."""
    names = {f.name for f in dataclasses.fields(config_class)} - set(exclude)
    return {name: value for name, value in ctx.params.items() if name in names and
            getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}

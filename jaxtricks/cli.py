"""Command lines generated from config dataclasses, and the exit codes every `train.*` program shares.

Each field of the dataclass becomes a flag (`batch_size` -> `--batch-size`); `Literal[...]` fields get
choices, `bool` fields `--flag/--no-flag`, `int | Literal["auto", ...]` fields a number or one of the words
(`--unroll 4`, `--unroll auto`), `X | None` fields the flag of X (None: leave the flag out); the field's
`metadata["help"]` is its help text. A config checks its own values in `__post_init__` with
`jaxtricks.errors.require`, naming the setting, not the flag.

Old spellings of a value: `metadata["deprecated"] = {old: new}` (e.g. `{-1: "auto"}`) accepts `--flag old` for
one more release as `new`, with one line on stderr naming the new spelling.

`main` turns the library's errors (jaxtricks.errors), which name settings, into one line that names this
program's flags. Exit codes: 0 done; 2 a user mistake (bad flag, missing data, unusable workdir), one line on
stderr; 3 training diverged (the last good checkpoint is kept); 130 interrupted (SIGINT: the loop saves a
checkpoint first; a second SIGINT, or one outside the loop, stops at once); 143 and 129 the same for SIGTERM and
SIGHUP (preemption).
"""

import argparse
import dataclasses
import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Sequence

from jaxtricks import parallel
from jaxtricks.errors import (
  ConfigError,
  DataError,
  DivergenceError,
  Interrupted,
  JaxtricksError,
  WorkdirError,
  exit_status,
)
from jaxtricks.workdir import read_config

EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130   # 128 + SIGINT, as a shell reports a Ctrl-C


def flag(name: str) -> str:
  """The flag of a setting: `batch_size` -> `--batch-size`."""
  return "--" + name.replace("_", "-")


def message(error: JaxtricksError, flags: dict[str, str] | None = None) -> str:
  """The error's message with each setting written as its flag (`flags` maps settings whose flag differs)."""
  flags = flags or {}
  return error.render(lambda s: flags.get(s, flag(s)))


class _Parser(argparse.ArgumentParser):
  def error(self, message):   # one line, exit 2, no usage dump; a misspelled flag gets the nearest flags named
    if message.startswith("unrecognized arguments: "):
      options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
      near = [m for w in message.split(": ", 1)[1].split() if w.startswith("--")
              for m in difflib.get_close_matches(w.split("=")[0], options, n=1, cutoff=0.75)]
      message += f"; did you mean {' and '.join(dict.fromkeys(near))}?" if near else "; --help lists the flags"
    raise ConfigError(None, message)


def _scalar_or_words(tp):
  """(int or float, its words) of a type `int | Literal["auto", ...]` (or float's), else None."""
  args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
  scalars = [a for a in args if a in (int, float)]
  literals = [a for a in args if typing.get_origin(a) is typing.Literal]
  if len(scalars) != 1 or not literals or len(scalars) + len(literals) != len(args):
    return None
  return scalars[0], tuple(w for a in literals for w in typing.get_args(a))


def _number_or_word(scalar: type, words: tuple[str, ...]):
  """argparse type: one of `words`, else `scalar(text)`."""
  def convert(text: str):
    if text in words:
      return text
    try:
      return scalar(text)
    except ValueError:
      kind = "an integer" if scalar is int else "a number"
      raise argparse.ArgumentTypeError(f"expected {kind} or one of {', '.join(words)}, got {text!r}") from None
  return convert


def _unwrap_optional(tp):
  if typing.get_origin(tp) in (typing.Union, types.UnionType):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if len(args) == 1:
      return args[0]
  return tp


def _recipe_help(recipes: dict[str, dict[str, Any]]) -> str:
  def words(k, v):   # as typed: a boolean is --flag or --no-flag
    return flag(k) if v is True else f"--no-{flag(k)[2:]}" if v is False else f"{flag(k)} {v}"
  listed = "; ".join(f"{name}: " + " ".join(words(k, v) for k, v in values.items()) for name, values in recipes.items())
  return (f"a named set of defaults, overridden by flags given beside it; without --recipe each flag has its own "
          f"default, shown below, which need not be any recipe's ({listed})")


def parser(config_cls: type, prog: str | None = None,
           recipes: dict[str, dict[str, Any]] | None = None) -> argparse.ArgumentParser:
  """The flags of config_cls; with `recipes` ({name: {setting: value}}) also --recipe NAME."""
  p = _Parser(prog=prog, description=(config_cls.__doc__ or "").strip().splitlines()[0])
  hints = typing.get_type_hints(config_cls)
  names = {f.name for f in dataclasses.fields(config_cls)}
  for recipe, values in (recipes or {}).items():
    if set(values) - names:
      raise TypeError(f"recipe {recipe!r}: {sorted(set(values) - names)} are not settings of {config_cls.__name__}")
  if recipes:
    p.add_argument("--recipe", choices=list(recipes), default=None, help=_recipe_help(recipes).replace("%", "%%"))
  for f in dataclasses.fields(config_cls):
    tp = _unwrap_optional(hints[f.name])
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    help_ = f.metadata.get("help", "") + ("" if default is None else f" (default: {default})")
    help_ = help_.replace("%", "%%")   # argparse %-formats help strings: "20%" stays "20%"
    if tp is bool:
      p.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=default, help=help_)
    elif (union := _scalar_or_words(tp)) is not None:
      scalar, words = union
      p.add_argument(flag(f.name), type=_number_or_word(scalar, words), default=default,
                     metavar="{" + ",".join(words) + f",{scalar.__name__.upper()}}}", help=help_)
    elif typing.get_origin(tp) is typing.Literal:
      choices = typing.get_args(tp)
      p.add_argument(flag(f.name), choices=choices, type=type(choices[0]), default=default, help=help_)
    elif tp in (int, float, str):
      p.add_argument(flag(f.name), type=tp, default=default, metavar=tp.__name__.upper(), help=help_)
    else:
      raise TypeError(f"{config_cls.__name__}.{f.name}: unsupported flag type {tp}")
  return p


def parse(config_cls: type, argv: Sequence[str] | None = None, prog: str | None = None,
          recipes: dict[str, dict[str, Any]] | None = None):
  """Parses argv into a config_cls instance; ConfigError on any bad value. `--recipe NAME` (when `recipes` is
  given) sets that recipe's values as the defaults, so flags given beside it still win."""
  p = parser(config_cls, prog, recipes)
  p.set_defaults(**_run_settings(p, config_cls, argv))   # (under a recipe's: one named on the line wins)
  if recipes:
    pre = _Parser(prog=prog, add_help=False)
    pre.add_argument("--recipe", choices=list(recipes), default=None)
    chosen = pre.parse_known_args(argv)[0].recipe
    if chosen:
      p.set_defaults(**recipes[chosen])
  args = vars(p.parse_args(argv))
  args.pop("recipe", None)
  for f in dataclasses.fields(config_cls):   # old spellings of a value: accepted, with one line naming the new
    old_to_new = _deprecated(config_cls, f.name)
    value = args[f.name]
    old = next((o for o in old_to_new if isinstance(o, str) == isinstance(value, str) and o == value), None)
    if old is not None:
      new = args[f.name] = old_to_new[old]
      instead = f"leave {flag(f.name)} out" if new is None else f"use {flag(f.name)} {new}"
      print(f"{p.prog}: warning: {flag(f.name)} {old} is deprecated: {instead} (the old spelling goes in the next "
            "release)", file=sys.stderr)
  return config_cls(**args)


def _run_settings(p: argparse.ArgumentParser, config_cls: type, argv: Sequence[str] | None) -> dict[str, Any]:
  """With --eval-only, the settings the workdir's run recorded (its config.json: its fingerprint, what defines the
  model) as defaults, each checked as its flag's value would be: the model is evaluated as it was trained without
  those flags typed again; a flag given still wins, and one that contradicts the run is refused by the program's
  fingerprint check (harness.evaluate_checkpoint). What the run did not record (an EBM's sampler, a computation's
  dtype, the evaluation's sample counts) keeps its flag or default. {} otherwise."""
  fields = {f.name: f for f in dataclasses.fields(config_cls)}
  if not {"eval_only", "workdir"} <= set(fields):
    return {}
  pre = _Parser(prog=p.prog, add_help=False)
  pre.add_argument("--eval-only", action=argparse.BooleanOptionalAction, default=fields["eval_only"].default)
  pre.add_argument("--workdir", default=fields["workdir"].default)
  known = pre.parse_known_args(argv)[0]
  path = Path(known.workdir) / "config.json"
  if not known.eval_only or not path.is_file():
    return {}
  actions, out = {a.dest: a for a in p._actions}, {}   # pylint: disable=protected-access  (argparse's own list)
  for key, value in read_config(path).items():
    action = actions.get(key)
    if key not in fields or key in ("eval_only", "workdir") or action is None:
      continue
    try:
      if isinstance(action, argparse.BooleanOptionalAction) and not isinstance(value, bool):
        raise ValueError(value)
      out[key] = action.type(str(value)) if action.type is not None else value
      if action.choices is not None and out[key] not in action.choices:
        raise ValueError(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
      raise WorkdirError("workdir", f"{path}: {key} {value!r} is not a value of this program's {flag(key)}; restore "
                         "the file, or evaluate the run with the code that made it") from None
  return out


def _deprecated(config_cls: type, name: str) -> dict:
  """The field's {old: new} spellings, also where a subclass redeclares the field to change its default."""
  for cls in config_cls.__mro__:
    field = getattr(cls, "__dataclass_fields__", {}).get(name)
    if field is not None and "deprecated" in field.metadata:
      return field.metadata["deprecated"]
  return {}


def main(config_cls: type, run: Callable[[Any], Any], argv: Sequence[str] | None = None,
         prog: str | None = None, flags: dict[str, str] | None = None,
         recipes: dict[str, dict[str, Any]] | None = None) -> int:
  """Parses flags and runs; user mistakes print one line and return 2, divergence returns 3.
  `flags`: {setting: flag} where a library setting goes by another flag here (e.g. {"batch_size": "--num"});
  `recipes`: named sets of defaults, chosen by --recipe (see `parse`)."""
  prog = prog or sys.argv[0]
  try:
    config = parse(config_cls, argv, prog, recipes)
    if hasattr(config, "cpu_device_count"):   # before JAX starts: the CPU layout this program runs fastest with
      parallel.set_cpu_devices(config.cpu_device_count())
    parallel.initialize_from_env()
    run(config)
  except (ConfigError, DataError, WorkdirError, DivergenceError, Interrupted, KeyboardInterrupt) as e:
    words = message(e, flags) if isinstance(e, JaxtricksError) else "interrupted"
    print(f"{prog}: error: {words}" if exit_status(e) == EXIT_USAGE else f"{prog}: {words}", file=sys.stderr)
    _exit_when_stuck(e, exit_status(e))
    return exit_status(e)
  return 0


def _exit_when_stuck(error: BaseException, status: int) -> None:
  """Threads a failed checkpoint left that would not stop (loop's exit hands them over on the error): the
  process ends with `status` at interpreter exit instead of waiting for them (checkpoints.exit_when_stuck)."""
  stuck = getattr(error, "stuck_threads", None)
  if stuck:
    from jaxtricks import checkpoints  # pylint: disable=import-outside-toplevel  (orbax: only where a run saved)
    checkpoints.exit_when_stuck(stuck, status)

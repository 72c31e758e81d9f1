"""The project's exception types: a leaf module, imported by every layer and importing nothing of the project.

The library describes a problem in terms of the setting it concerns (a config field name such as `batch_size`
or `workdir`), never of a command-line flag: a program that owns flags renders the same error with its own
flag names (`jaxtricks.cli`). In a message, `{name}` stands for the setting `name`:

    raise ConfigError("batch_size", "30 does not divide by the 4 devices; use a multiple of 4 (or fewer {devices})")
    str(e)             -> "batch_size 30 does not divide by the 4 devices; use a multiple of 4 (or fewer devices)"
    e.render(cli.flag) -> "--batch-size 30 does not divide by the 4 devices; use a multiple of 4 (or fewer --devices)"
"""

import re
from typing import Callable


_MENTION = re.compile(r"\{([a-z][a-z0-9_]*)\}")   # {batch_size}; other braces (dict reprs) stay as they are


class JaxtricksError(Exception):
  """Base class. `setting`: the setting the problem concerns (or None); `problem`: the rest of the message,
  where `{name}` marks a mention of another setting."""

  def __init__(self, setting: str | None, problem: str):
    self.setting, self.problem = setting, problem
    super().__init__(self.render())

  def render(self, name: Callable[[str], str] = lambda s: s) -> str:
    """The message with every setting written as `name(setting)` (e.g. its command-line flag)."""
    problem = _MENTION.sub(lambda m: name(m.group(1)), self.problem)
    return f"{name(self.setting)} {problem}" if self.setting else problem


class ConfigError(JaxtricksError, ValueError):
  """A setting whose value cannot work."""


class DataError(JaxtricksError, ValueError):
  """A data file or data source is missing, truncated or malformed; the message says which and what to do."""


class WorkdirError(JaxtricksError, ValueError):
  """The workdir cannot be used: not writable, damaged, or it holds a run of a different configuration."""


class DivergenceError(JaxtricksError, RuntimeError):
  """Training produced a non-finite or exploding metric; the last good checkpoint is kept."""


class Interrupted(JaxtricksError):
  """The run was stopped by SIGINT (Ctrl-C) after saving a checkpoint of the step it had reached."""


def require(ok: bool, setting: str | None, problem: str) -> None:
  """Raises ConfigError(setting, problem) unless ok (for configs' __post_init__)."""
  if not ok:
    raise ConfigError(setting, problem)

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
  """The run was stopped by a signal (SIGINT: Ctrl-C; SIGTERM, SIGHUP: preemption) after saving a checkpoint of the
  step it had reached; `signum` is that signal's number (a program exits 128 + signum, as a shell reports it)."""

  def __init__(self, setting: str | None, problem: str, signum: int = 2):   # 2: SIGINT
    self.signum = signum
    super().__init__(setting, problem)


def exit_status(error: BaseException | None) -> int:
  """The status a program exits with when `error` ends it (jaxtricks.cli's codes): 0 none, 2 a user mistake or an
  unusable workdir, 3 divergence, 128 + signal number when stopped by a signal, 1 anything else."""
  if error is None:
    return 0
  if isinstance(error, Interrupted):
    return 128 + error.signum
  if isinstance(error, KeyboardInterrupt):
    return 130
  if isinstance(error, DivergenceError):
    return 3
  return 2 if isinstance(error, JaxtricksError) else 1


def require(ok: bool, setting: str | None, problem: str) -> None:
  """Raises ConfigError(setting, problem) unless ok (for configs' __post_init__)."""
  if not ok:
    raise ConfigError(setting, problem)

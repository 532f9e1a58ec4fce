"""Exceptions with messages a user can act on.

Every error raised for bad input names what was wrong and what to do; each area of the stack has its own
subclass so callers (CLI, ROS nodes) can catch one family without swallowing bugs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class KeystoneError(Exception):
    """Base class for all errors Keystone raises on purpose."""


class ConfigError(KeystoneError, ValueError):
    """A configuration value, CLI option or file is invalid."""


class SimError(KeystoneError):
    """The simulator cannot do what was asked (unknown task, arm, colour; unreachable pose)."""


class DatasetError(KeystoneError):
    """An episode store, bag or export is missing, corrupt or inconsistent."""


class ModelError(KeystoneError):
    """A model, checkpoint or model input is invalid."""


class SafetyError(KeystoneError):
    """A command was rejected by the safety shield."""


class GroundingError(KeystoneError):
    """An instruction cannot be grounded in the scene."""


def unknown_choice(kind: str, value: object, valid: Iterable[str], error: type[KeystoneError] = ConfigError) -> KeystoneError:
    """Build the standard 'unknown X' error that lists the valid choices.

    >>> str(unknown_choice("task", "fly", ["stack", "insert"]))
    "unknown task 'fly'; valid choices: insert, stack"
    """
    choices = ", ".join(sorted(valid))
    return error(f"unknown {kind} {value!r}; valid choices: {choices}")


def near_names(value: object, valid: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The valid names closest to `value` (a typo's likely fix), best first; empty when none is close."""
    return difflib.get_close_matches(str(value), list(valid), n=n, cutoff=cutoff)


def unknown_near(kind: str, value: object, valid: Iterable[str]) -> ConfigError:
    """`unknown_choice`'s error, with the valid names closest to `value` suggested (a typo's fix).

    >>> str(unknown_near("recipe", "keystone-bse", ["keystone-base", "tiny"]))
    "unknown recipe 'keystone-bse'; valid choices: keystone-base, tiny; did you mean 'keystone-base'?"
    """
    valid = list(valid)
    base = unknown_choice(kind, value, valid)
    near = near_names(value, valid, n=3, cutoff=0.5)
    if not near:
        return ConfigError(str(base))
    return ConfigError(f"{base}; did you mean {' or '.join(repr(n) for n in near)}?")

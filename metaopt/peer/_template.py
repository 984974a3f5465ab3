"""The command line as a template: which words are priors, and the argv a trial runs.

A word is a prior when what follows its ``~`` looks like a call, ``name(...)``:

====================  =========  ===========================
word                  name       renders as
====================  =========  ===========================
``--lr~'uniform(…)'``  ``lr``     ``--lr`` ``0.01`` (2 words)
``--lr=~'uniform(…)'`` ``lr``     ``--lr=0.01``
``-l~'uniform(…)'``    ``l``      ``-l`` ``0.01``
``~'uniform(…)'``      ``argN``   ``0.01`` (N counts unnamed positional priors from 0)
``~lr~'uniform(…)'``   ``lr``     ``0.01``
====================  =========  ===========================

Any other word is literal, so ``~/data`` or ``--out=~/runs`` stay as typed; but a submitted
command may not hold a prior's name after a ``~`` without its call (``--lr~loguniform[1e-5,
1]``), nor an option both searched and given a value (see check_submitted). Floats render as
their shortest round-trip text (``1e-05``), a negative one with an exponent in positional
notation (``-0.00005``: argparse takes ``-5e-05`` for an option, as its pattern for negative
numbers has no exponent, and the trial failed "expected one argument"); ints and strings as
themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from metaopt._errors import MetaoptError, SpaceError
from metaopt.space import PRIOR_NAMES

__all__ = [
    "CommandTemplate",
    "Placeholder",
    "check_submitted",
    "format_value",
    "parse_template",
    "render",
]

_CALL = re.compile(r"\s*[A-Za-z_]\w*\s*\(.*\)\s*", re.DOTALL)
_OPTION = re.compile(r"(--?)([A-Za-z_][A-Za-z0-9_.-]*)(=?)~(.+)", re.DOTALL)
_NAMED = re.compile(r"~([A-Za-z_][A-Za-z0-9_.-]*)~(.+)", re.DOTALL)

Style = Literal["separate", "equals", "positional"]


@dataclass(frozen=True)
class Placeholder:
    """One prior in the template: where its value goes and how it is written."""

    name: str
    prior: str
    style: Style
    flag: str = ""  # the option as typed, e.g. "--lr"; empty for positional priors


@dataclass(frozen=True)
class CommandTemplate:
    """A parsed command line: literal words and placeholders, in order."""

    words: tuple[str, ...]
    parts: tuple[str | Placeholder, ...]

    @property
    def priors(self) -> dict[str, str]:
        """Prior text by parameter name, in command-line order."""
        return {p.name: p.prior for p in self.parts if isinstance(p, Placeholder)}

    def render(self, params: Mapping[str, Any]) -> list[str]:
        """The argv for one trial.

        Raises:
            MetaoptError: a placeholder has no value in ``params``.
        """
        return render(self, params)


def parse_template(words: Sequence[str]) -> CommandTemplate:
    """Find the priors in a command line.

    Args:
        words: the command as argv words, program first.

    Returns:
        The template; ``template.priors`` maps names to prior text for ``Space.from_dict``.

    Raises:
        SpaceError: two priors share a name, or a word is not a string.
    """
    parts: list[str | Placeholder] = []
    seen: set[str] = set()
    positional = 0
    for word in words:
        if not isinstance(word, str):
            raise SpaceError(f"command word {word!r} is not a string")
        part = _placeholder(word, positional)
        if isinstance(part, Placeholder):
            if part.name in seen:
                raise SpaceError(
                    f"parameter {part.name!r} appears twice in the command; rename one"
                )
            seen.add(part.name)
            if part.style == "positional" and part.name == f"arg{positional}":
                positional += 1
        parts.append(part)
    return CommandTemplate(tuple(words), tuple(parts))


def check_submitted(template: CommandTemplate) -> None:
    """Refuse, as a command is submitted, what parses but cannot be what the user meant.

    Not when a trial starts: an experiment submitted before these checks must still run.

    Raises:
        SpaceError: a prior's name after a ~ without its call (``--lr~loguniform[1e-5, 1]``,
            which reached the program as it was, its parameter not searched), or an option
            both searched and given a value (``--lr~'…' --lr 0.1``, a command line copied and
            one prior added: the program's argparse took the last one, so every trial ran
            with 0.1 while status and best listed the searched values it never used).
    """
    parts = template.parts
    for word in parts:
        if isinstance(word, str) and _MISWRITTEN.fullmatch(word):
            raise SpaceError(
                f"{word!r} is not a prior as written; write it as name(arguments) in one"
                " quoted word, e.g. --lr~'loguniform(1e-5, 1)'"
            )
    # Only after the prior: before it, the flag may be a launcher's (`python -m pkg.train
    # -m~…`, `nice -n 5 ./train -n~…`), and the program's argparse takes the last one anyway.
    flags: dict[str, Placeholder] = {}
    for at, word in enumerate(parts):
        if isinstance(word, Placeholder):
            if word.flag:
                flags.setdefault(word.flag, word)
            continue
        if word.partition("=")[0] not in flags:
            continue
        searched = flags[word.partition("=")[0]]
        tilde = "=~" if searched.style == "equals" else "~"
        given = parts[at + 1] if "=" not in word and at + 1 < len(parts) else None
        value = f"{word} {given}" if isinstance(given, str) else word
        raise SpaceError(
            f"{searched.flag} is searched ({searched.flag}{tilde}'{searched.prior}') and also"
            f" given a value ({value}); the program would take the last one: drop one of them"
        )


def render(template: CommandTemplate, params: Mapping[str, Any]) -> list[str]:
    """The argv for one trial: each placeholder replaced by its value in ``params``."""
    argv: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            argv.append(part)
            continue
        if part.name not in params:
            raise MetaoptError(
                f"the command needs parameter {part.name!r} but the trial has none; "
                "the space and the command disagree"
            )
        value = format_value(params[part.name])
        if part.style == "separate" and _looks_like_an_option(value) and part.flag[:2] == "--":
            # `--x --flag` (a choice of "--flag"): the program's argparse took the value for
            # an option of its own, and every trial with it failed. Joined, it is a value.
            argv.append(f"{part.flag}={value}")
        elif part.style == "separate":
            argv += [part.flag, value]
        elif part.style == "equals":
            argv.append(f"{part.flag}={value}")
        else:
            argv.append(value)
    return argv


def _looks_like_an_option(value: str) -> bool:
    """Whether argparse would read the word as an option: a dash first, and not a negative
    number as it writes one (-3, -0.5; not -inf, nor an exponent: see format_value)."""
    return value.startswith("-") and _NEGATIVE.fullmatch(value) is None


_NEGATIVE = re.compile(r"-\d+|-\d*\.\d+")  # argparse's _negative_number_matcher


def format_value(value: Any) -> str:
    """A parameter value as one command-line word."""
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        text = repr(float(value))  # float() because numpy's float64 repr names its type
        if text.startswith("-") and "e" in text:
            text = format(Decimal(text), "f")  # (see the module docstring); exact
            return text if "." in text else f"{text}.0"  # still a float (-1e16), not an int
        return text
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return format_value(item())
    return str(value)


# After a ~: a call begun but not closed ("uniform(0, 1"), or nothing at all ("--lr~" then
# "uniform(0, 1)" as the next word, when a space slipped in): a prior the shell or a typo broke.
_BROKEN = re.compile(r"(?:--?[A-Za-z_][A-Za-z0-9_.-]*=?|~[A-Za-z_][A-Za-z0-9_.-]*)?~"
                     r"(?:\s*[A-Za-z_]\w*\s*\(.*)?", re.DOTALL)  # fmt: skip


# After a ~: a prior's name not followed by its call ("loguniform[1e-5, 1]", "loguniform 1e-5 1",
# or "~uniform(0, 1)" after a doubled ~). Literal, such a word reached the program unchanged,
# and its parameter was not searched.
_MISWRITTEN = re.compile(
    r"(?:--?[A-Za-z_][A-Za-z0-9_.-]*=?|~[A-Za-z_][A-Za-z0-9_.-]*)?"
    rf"(?:~\s*~[\s~]*(?:{'|'.join(PRIOR_NAMES)})\b|~\s*(?:{'|'.join(PRIOR_NAMES)})(?=[\s\[{{]|$)).*",
    re.DOTALL,
)


def _placeholder(word: str, positional: int) -> str | Placeholder:
    part = _prior_or_literal(word, positional)
    if isinstance(part, str) and _BROKEN.fullmatch(word) and word != "~":
        closed = word.rpartition(")")
        if closed[1] and closed[2].strip():  # "uniform(0, 1)x": not unfinished, but followed
            raise SpaceError(
                f"{word!r} has {closed[2]!r} after its prior; a prior ends at its closing"
                " parenthesis, e.g. --lr~'loguniform(1e-5, 1)'"
            )
        raise SpaceError(
            f"{word!r} looks like an unfinished prior; write it as one quoted word, "
            "e.g. --lr~'loguniform(1e-5, 1)'"
        )
    return part


def _prior_or_literal(word: str, positional: int) -> str | Placeholder:
    option = _OPTION.fullmatch(word)
    if option is not None and _CALL.fullmatch(option.group(4)):
        dashes, name, equals, prior = option.groups()
        style: Style = "equals" if equals else "separate"
        return Placeholder(name, prior.strip(), style, dashes + name)
    named = _NAMED.fullmatch(word)
    if named is not None and _CALL.fullmatch(named.group(2)):
        return Placeholder(named.group(1), named.group(2).strip(), "positional")
    if word.startswith("~") and _CALL.fullmatch(word[1:]):
        return Placeholder(f"arg{positional}", word[1:].strip(), "positional")
    return word

"""What a training script imports: report results, read its parameters, honour stop requests.

The peer talks to a trial through its environment only, so any language can take part:

==========================  ====================================================================
``METAOPT_TRIAL_ID``        the trial's id (hex)
``METAOPT_PARAMS``          the trial's parameters as one JSON object
``METAOPT_TRIAL_DIR``       a directory that belongs to this trial alone
``METAOPT_DATA_DIR``        the peer's data directory
``METAOPT_CHECKPOINT_DIR``  where to save checkpoints; the same directory again after a thaw
``METAOPT_STOP_FILE``       a path; once a file exists there, save a checkpoint and exit
``METAOPT_RESUME_STEP``     set on a resume (a thaw, or a re-run after a stop or crash on the
                            peer that holds its checkpoint): the last step recorded before
==========================  ====================================================================

Results go to stdout as one line each, ``METAOPT {"loss": 0.12, "step": 3}``. A metric name is
1–64 characters of letters, digits, ``_ . / -`` starting with a letter or ``_``; a value is a
finite number or a string of at most 256 characters (booleans are refused; ``NaN``,
``Infinity`` and ``-Infinity`` are read as a run that diverged: one that ends on such a report
of its objective is recorded failed, "diverged"); ``step``, when given, is an integer ≥ 0 (a
whole float such as 3.0 is read as 3). A line is at most 64 KiB (``MAX_REPORT_BYTES``); a
peer cuts a longer one unread. A stop
request is the stop file; if the trial has not exited ``grace`` seconds later the peer sends
SIGTERM to its process group, and SIGKILL after another ``grace``.

With no peer (no ``METAOPT_PARAMS``) the script still runs by hand: :func:`params` reads
``--name value`` / ``--name=value`` from ``sys.argv`` and :func:`report` still prints.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
import re
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Union

from metaopt._errors import WorkerError

__all__ = [
    "ENV_CHECKPOINT_DIR",
    "ENV_DATA_DIR",
    "ENV_PARAMS",
    "ENV_RESUME_STEP",
    "ENV_STOP_FILE",
    "ENV_TRIAL_DIR",
    "ENV_TRIAL_ID",
    "REPORT_PREFIX",
    "MetricValue",
    "check_metric",
    "check_name",
    "checkpoint_dir",
    "data_dir",
    "params",
    "report",
    "resume_step",
    "should_stop",
    "trial_dir",
    "trial_id",
]

ENV_TRIAL_ID = "METAOPT_TRIAL_ID"
ENV_PARAMS = "METAOPT_PARAMS"
ENV_TRIAL_DIR = "METAOPT_TRIAL_DIR"
ENV_DATA_DIR = "METAOPT_DATA_DIR"
ENV_CHECKPOINT_DIR = "METAOPT_CHECKPOINT_DIR"
ENV_STOP_FILE = "METAOPT_STOP_FILE"
ENV_RESUME_STEP = "METAOPT_RESUME_STEP"
REPORT_PREFIX = "METAOPT "

# Union, not int | float | str: trials may run under Python 3.9, where | of types fails.
MetricValue = Union[int, float, str]  # noqa: UP007

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]{0,63}")
_MAX_STR = 256
MAX_METRICS = 64
# The longest stdout line a peer reads as a report (without its newline). 64 metrics of 256
# characters fit in ASCII, but JSON writes other text 6 bytes a character ("\u4e2d").
MAX_REPORT_BYTES = 65536
_INT_LIMIT = 2**63
_INT_TEXT = re.compile(r"[+-]?\d+")
_OPTION = re.compile(r"--([A-Za-z_][A-Za-z0-9_.-]*)(?:=(.*))?", re.DOTALL)

# The process's own parameters, parsed once; keyed by their source so a changed environment
# (tests, or a script that edits os.environ) is re-read rather than served stale.
_params_cache: (
    tuple[tuple[str | None, tuple[str, ...]], tuple[dict[str, _Given], dict[str, Any]]] | None
) = None


def check_name(name: object) -> str:
    """A metric (or objective) name, or WorkerError saying why it is not allowed."""
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise WorkerError(
            f"metric name {name!r} is not allowed; use 1-64 letters, digits or _./- "
            "starting with a letter or _"
        )
    return name


def _shown(number: int) -> str:
    """An integer as an error shows it: 10**400 filled the message with 401 digits (and
    past 4,300 digits str() itself refuses)."""
    if number.bit_length() < 128:
        return str(number)
    sign = "a negative" if number < 0 else "an"
    return f"{sign} integer of about {number.bit_length() * 0.30103:.0f} digits"


def check_metric(name: object, value: object) -> MetricValue:
    """The value as it will be reported, or WorkerError saying why it cannot be."""
    check_name(name)
    if isinstance(value, bool):
        raise WorkerError(f"metric {name!r} is a bool; report 0 or 1 instead")
    if isinstance(value, numbers.Integral):
        number = int(value)
        if not -_INT_LIMIT <= number < _INT_LIMIT:
            raise WorkerError(f"metric {name!r} = {_shown(number)} does not fit in 64 bits")
        if name == "step" and number < 0:
            raise WorkerError(f"step must be an integer >= 0, got {number}")
        return number
    if name == "step":
        # Languages without an integer type print 3.0 for 3; only a whole step is a step.
        whole = float(value) if isinstance(value, numbers.Real) else math.nan
        if whole.is_integer() and whole >= 0:
            return check_metric(name, int(whole))
        raise WorkerError(f"step must be an integer >= 0, got {value!r}")
    if isinstance(value, numbers.Real):
        real = float(value)
        if not math.isfinite(real):
            raise WorkerError(f"metric {name!r} is {real}; report only finite numbers")
        return real
    if isinstance(value, str):
        if len(value) > _MAX_STR:
            raise WorkerError(f"metric {name!r} is a string over {_MAX_STR} characters")
        return value
    raise WorkerError(
        f"metric {name!r} is a {type(value).__name__}; report a float, int or str "
        "(e.g. loss.item())"
    )


def _reportable(name: object, value: object) -> MetricValue:
    """check_metric, except that nan and inf pass: a loss that blew up is the training's news,
    not the script's error (raising here ended a run that could have recovered, and a crash
    is recorded with a traceback where the peer records "diverged")."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        real = float(value)
        if not math.isfinite(real) and name != "step":
            check_name(name)
            return real
    return check_metric(name, value)


def report(metrics: Mapping[str, object] | None = None, /, **kw: object) -> None:
    """Print one ``METAOPT {json}`` line to stdout and flush it.

    Args:
        metrics: metrics whose names are not Python identifiers (``{"val/loss": 0.1}``).
        **kw: more metrics, e.g. ``loss=0.12, step=3``.

    Raises:
        WorkerError: no metric, or a name or value outside the rule in the module docstring
            (nan and inf are reported: the peer records a run that ends on one as diverged).
    """
    if metrics is not None and not isinstance(metrics, Mapping):
        # report(0.12) raised "'float' object is not iterable".
        raise WorkerError(
            f"report() takes metrics by name, e.g. report(loss={metrics!r}, step=3), or a"
            f" dict of them; got {type(metrics).__name__} {metrics!r}"
        )
    given: dict[str, object] = dict(metrics or {})
    given.update(kw)
    if not given:
        raise WorkerError("report() needs at least one metric, e.g. report(loss=0.12, step=3)")
    if len(given) > MAX_METRICS:
        raise WorkerError(f"report() got {len(given)} metrics; at most {MAX_METRICS} per call")
    clean = {name: _reportable(name, value) for name, value in given.items()}
    line = REPORT_PREFIX + json.dumps(clean, separators=(",", ":"))
    if len(line) > MAX_REPORT_BYTES:  # (ASCII: one byte a character)
        # Printed, the peer cut it unread, and the run failed with its report lost.
        raise WorkerError(
            f"report() makes a line of {len(line)} bytes, and a peer reads at most"
            f" {MAX_REPORT_BYTES}: report fewer or shorter metrics (text other than ASCII"
            " takes 6 bytes a character)"
        )
    out = sys.stdout
    if out is None:  # (run with stdout closed, `>&-`: as print(), nowhere to write; no peer)
        return
    out.write(line + "\n")
    out.flush()


def params(defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """This trial's parameters over ``defaults``.

    They come from ``--name value`` and ``--name=value`` in ``sys.argv`` (a bare ``--flag`` is
    True), with ``true``/``false``, ints and finite floats recognised; a value whose default is
    an int, float, bool or str is read as one, and one whose default is a list or tuple takes every
    word given (``--layers 64 128``), each read as the default's first item. Under a peer
    ``METAOPT_PARAMS`` then sets the searched parameters exactly as the search chose them; the
    command line still gives the fixed options a submit passed through (``--epochs 10``),
    which the environment does not carry.

    Args:
        defaults: values for the names the trial or the command line do not set.

    Returns:
        A new dict each call.

    Raises:
        WorkerError: ``METAOPT_PARAMS`` is not a JSON object, or an option whose default is a
            number or a bool has a value that is none (an int's: no whole number).
    """
    global _params_cache
    source = (os.environ.get(ENV_PARAMS), tuple(sys.argv[1:]))
    if _params_cache is None or _params_cache[0] != source:
        searched = _parse_env(source[0]) if source[0] is not None else {}
        _params_cache = (source, (_parse_argv(source[1]), searched))
    given, searched = _params_cache[1]
    if defaults is not None and not isinstance(defaults, Mapping):
        # params(parser.parse_args()) raised "'Namespace' object is not iterable".
        raise WorkerError(
            f"params() takes a dict of defaults, got {type(defaults).__name__}; for argparse's"
            " result pass vars(args)"
        )
    out = dict(defaults or {})
    for name, option in given.items():
        raw = option.raw
        if name not in searched:  # (choices(['auto', 0.1]) drew "auto" for a float default)
            key = _key(name, out)
            negated = _key(name[3:], out) if name[:3] in ("no-", "no_") else ""
            if key not in out and isinstance(out.get(negated), bool):
                # argparse's BooleanOptionalAction: --no-shuffle (a word after it is an
                # argument). Given a value it became a key of its own, shuffle left on.
                if not (raw is True or isinstance(raw, _NextWord)):
                    raise WorkerError(
                        f"{_as_typed(name, raw)}: give --{name} alone, without a value"
                    )
                out[negated] = False
                continue
            value = _like(name, out[key], option) if key in out else _infer(raw)
            # A plain str, as a script's own: the subclass went into its YAML dumps and pickles.
            out[key] = str(value) if isinstance(value, _NextWord) else value
    out.update({_key(name, out): value for name, value in searched.items()})
    return out


def _key(name: str, defaults: Mapping[str, Any]) -> str:
    """Where an option's value goes: ``--learning-rate`` to ``learning_rate`` when that, and
    not the name as written, is a default, as argparse names it (the search's value went to
    a key the script never read, and every trial ran with the default learning rate)."""
    if name not in defaults and "-" in name and name.replace("-", "_") in defaults:
        return name.replace("-", "_")
    return name


def should_stop() -> bool:
    """Whether the peer asked this trial to save a checkpoint and exit (False with no peer)."""
    path = os.environ.get(ENV_STOP_FILE)
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


def checkpoint_dir() -> Path:
    """The directory to save and load checkpoints in, created if missing.

    ``METAOPT_CHECKPOINT_DIR`` under a peer; ``./metaopt-checkpoint`` when run by hand.
    """
    path = Path(os.environ.get(ENV_CHECKPOINT_DIR) or "metaopt-checkpoint")
    path.mkdir(parents=True, exist_ok=True)
    return path


def resume_step() -> int | None:
    """The step to resume after (``METAOPT_RESUME_STEP``), or None when this is a fresh start.

    Raises:
        WorkerError: the variable is set but is not an integer >= 0.
    """
    text = os.environ.get(ENV_RESUME_STEP, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):  # ("²" is a digit to isdigit, not to int)
        raise WorkerError(f"{ENV_RESUME_STEP}={text!r} is not an integer >= 0; unset it")
    return int(text)


def trial_id() -> str | None:
    """This trial's id, or None when run by hand."""
    return os.environ.get(ENV_TRIAL_ID) or None


def trial_dir() -> Path | None:
    """The directory that belongs to this trial alone, or None when run by hand."""
    path = os.environ.get(ENV_TRIAL_DIR)
    return Path(path) if path else None


def data_dir() -> Path | None:
    """The peer's data directory, or None when run by hand."""
    path = os.environ.get(ENV_DATA_DIR)
    return Path(path) if path else None


def _parse_env(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise WorkerError(
            f"{ENV_PARAMS} is not valid JSON ({exc}); the peer sets it, unset it to run by hand"
        ) from None
    if not isinstance(value, dict):
        raise WorkerError(f"{ENV_PARAMS} must be a JSON object, got {type(value).__name__}")
    return value


class _NextWord(str):
    """The word after an option given without ``=``: its value, or, after a flag, an argument
    of the program's own (``--verbose data.csv``); only the option's default tells which."""


class _Given:
    """An option's occurrences on a command line."""

    __slots__ = ("bare", "raw", "words")

    def __init__(self) -> None:
        self.raw: str | bool = True  # the last one's value: True for a bare flag
        self.bare = 0  # how many were bare, for a count (``--verbose --verbose`` is 2)
        # The words of every one, value first and every word up to the next option after it,
        # for a list's default (argparse's nargs, or action="append" given more than once).
        self.words: list[str] = []


def _parse_argv(argv: tuple[str, ...]) -> dict[str, _Given]:
    """Each option's occurrences by name; a word after one given without ``=`` is a
    _NextWord (its value, or the program's own argument after a flag)."""
    out: dict[str, _Given] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            break
        match = _OPTION.fullmatch(word)
        if match is None:
            continue
        name, text = match.group(1), match.group(2)
        option = out.setdefault(name, _Given())
        if text is None:
            if i < len(argv) and _is_value(argv[i]):
                text = _NextWord(argv[i])
            else:
                option.raw = True
                option.bare += 1
                continue
        option.raw = text
        option.words.append(text)
        if isinstance(text, _NextWord):
            i += 1
            while i < len(argv) and _is_value(argv[i]):
                option.words.append(argv[i])
                i += 1
    return out


def _is_value(word: str) -> bool:
    """Whether a word after an option is a value rather than another option (``-2`` is)."""
    return word != "--" and (not word.startswith("-") or _is_number(word))


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _infer(raw: str | bool) -> Any:
    if isinstance(raw, bool):
        return raw
    text = raw.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _is_number(text):
        return float(text)
    return raw


def _as_typed(name: str, raw: str | bool) -> str:
    """An option as its command line gave it: ``--lr abc``, ``--lr=``, ``--lr``."""
    if isinstance(raw, bool):
        return f"--{name}"
    return f"--{name} {raw}" if isinstance(raw, _NextWord) else f"--{name}={raw}"


def _like(name: str, default: Any, option: _Given) -> Any:
    """An option read as the type of ``default`` (see _read); a list's default takes every
    word given (argparse's nargs), each read as its first item is, and a count's (an int
    default of 0) counts the option given bare.

    Raises:
        WorkerError: as _read, for a word of a list too.
    """
    if isinstance(default, (list, tuple)):
        item = default[0] if default else None
        words = [str(w) for w in option.words]  # (a word that is no bool is no bool here)
        try:
            values = [_infer(w) if item is None else _read(name, item, w) for w in words]
        except WorkerError:
            shown = _as_typed(name, option.words[0]) if len(words) == 1 else None
            raise WorkerError(
                f"{shown or f'--{name} ' + ' '.join(words)}: give {type(item).__name__} values"
                f" (its default is {default!r})"
                + (f"; the program's own arguments go before --{name}" if not shown else "")
            ) from None
        return type(default)(values)
    if type(default) is int and default == 0 and option.raw is True:
        # A count (argparse's action="count", default 0): a bare `--verbose` counts 1, and
        # `--verbose --verbose` 2. Not before a word (`--seed abc`, `--num-workers data/` with
        # $NW unset are mistakes, to refuse) nor for another int (`--epochs $EPOCHS` unset
        # ran every trial 1 epoch).
        return option.bare
    return _read(name, default, option.raw)


def _read(name: str, default: Any, raw: str | bool) -> Any:
    """``raw`` read as the type of ``default`` where that is unambiguous, else inferred.

    Raises:
        WorkerError: a number's or a bool's default, and a value that is none (``--lr abc``
            gave the script the text "abc" for a learning rate, to fail far from the cause);
            for a bool's, only a value given with ``=``: a word after a flag is an argument.
    """
    if isinstance(default, bool):
        text = str(raw).strip().lower()
        if text in ("1", "yes", "on", "true"):
            return True
        if text in ("0", "no", "off", "false"):
            return False
        if isinstance(raw, _NextWord):
            # A bare flag and then an argument: every trial of `train.py --verbose data.csv`
            # failed on "give true or false". (`--verbose=maybe` is still refused.)
            return True
        raise WorkerError(f"{_as_typed(name, raw)}: give true or false (its default is {default})")
    if isinstance(default, (int, float)):
        if isinstance(default, float) and not isinstance(raw, bool):
            with contextlib.suppress(ValueError):
                return float(raw)  # inf too: `--max-norm inf` is a float's value
        if isinstance(raw, bool) or not _is_number(raw):
            count = (
                f"; if --{name} counts (action='count'), give it after the program's arguments"
                if type(default) is int and default == 0 and isinstance(raw, _NextWord)
                else ""
            )
            raise WorkerError(
                f"{_as_typed(name, raw)}: give a number (its default is {default!r}){count}"
            )
        value = _infer(raw)
        if isinstance(default, int) and isinstance(value, float):
            # As argparse's type=int refuses it: `--epochs 5.5` gave range() a float, to fail
            # far from the cause. A whole number written as a float (`--steps 1e6`) is one.
            exact = Decimal(str(raw))
            if exact != exact.to_integral_value():
                raise WorkerError(
                    f"{_as_typed(name, raw)}: give a whole number (its default is {default!r})"
                )
            return int(exact)
        return value
    if isinstance(raw, bool) or isinstance(default, str):
        return raw  # a bare flag; a text's default keeps "007" a text
    return _infer(raw)

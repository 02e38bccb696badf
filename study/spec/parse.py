"""The study file (TOML) in three steps, one readable line per problem: :func:`read` (TOML, no user code),
``resolve.describe_plugins`` (the one step that imports the file's own optimizers and task) and
:func:`validate` (no user code: it reads what resolution described). :func:`parse` and :func:`load` run the
three in turn."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

from pydantic import ValidationError

from study.errors import UserError
from study.spec.model import StudySpec
from study.spec.resolve import describe_plugins
from study.spec.values import FINITE, is_number, shown

_EXPECTED = {"bool_type": "true or false", "string_type": "a string in quotes", "int_type": "a whole number",
             "float_type": "a number", "list_type": "a list [...]", "dict_type": "a table"}


def _format_validation_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = list(first["loc"])
    if len(loc) > 1 and loc[0] == "lr_schedule" and loc[1] in ("constant", "step", "cosine"):
        del loc[1]  # the kind pydantic puts in the path: lr_schedule.factor, not lr_schedule.step.factor
    where = ".".join(str(p) for p in loc if not str(p).startswith(("function-", "union")))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "missing required key"
    elif first["type"] == "extra_forbidden":
        message = "unknown key (check the spelling; see README 'The study file')"
    elif first["type"] == "finite_number":
        message = FINITE
    elif first["type"] == "float_type" and is_number(first.get("input")):
        message = f"{shown(first['input'])} is too large for a floating-point number"
    elif first["type"] == "int_type" and isinstance(first.get("input"), float):
        message = FINITE if not math.isfinite(first["input"]) else f"must be a whole number (got {first['input']!r})"
    elif first["type"] in _EXPECTED:  # strict types: "yes" is not true, 1 is not a string
        message = f"must be {_EXPECTED[first['type']]} (got {shown(first.get('input'))})"
    return f"{source}: {where + ': ' if where else ''}{message}"


def read(text: str, source: str = "<study>") -> dict:
    """The study file's TOML as a dict (no user code runs)."""
    try:
        raw = tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}") from None
    except ValueError:  # Python refuses to read an integer of more than 4300 digits
        raise UserError(f"{source}: not valid TOML: a number has too many digits to read") from None
    if "plugins" in raw:
        raise UserError(f"{source}: plugins: unknown key (check the spelling; see README 'The study file')")
    return raw


def validate(raw: dict, source: str = "<study>", described: dict | None = None) -> StudySpec:
    """The validated study: ``raw`` (from :func:`read`) with the file's own optimizers and task as
    resolution ``described`` them (none: only built-in names are known). No user code runs."""
    try:
        return StudySpec.model_validate({**raw, "plugins": described} if described else raw)
    except ValidationError as exc:
        raise UserError(_format_validation_error(source, exc)) from None


def parse(text: str, source: str = "<study>", base_dir: Path | None = None) -> StudySpec:
    """Read, resolve and validate study-file text; raise UserError with one readable line. Plugin paths are
    relative to ``base_dir`` (the study file's folder; default: the current directory)."""
    raw = read(text, source)
    try:
        described = describe_plugins(raw, base_dir or Path.cwd())
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    return validate(raw, source, described)


def load(path: str | Path) -> StudySpec:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"study file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read study file {path}: {exc}") from None
    return parse(text, str(path), path.resolve().parent)

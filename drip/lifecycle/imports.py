"""Subscriber CSV files: reading one (every row checked before any is stored), and
writing cells a spreadsheet will not run as formulas.

Problems are reported as ``file:line: message``, one per bad row, so a person can fix
the file in one go. The encoding follows the file's byte-order mark (UTF-8 or UTF-16),
else UTF-8 unless the caller names another; a file that is not valid in it is refused
with a hint instead of a traceback.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from drip.core.courses import is_timezone
from drip.core.entries import Entry
from drip.core.exceptions import DripError, InvalidSubscriber

#: the longest field accepted (names and zones are short; this only stops runaway cells)
MAX_FIELD = 64 * 1024
T = TypeVar("T")


@dataclass
class CheckedImport:
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: rows whose address appeared on an earlier row (the first one is kept)
    duplicates: int = 0


def read_import(path: Path, *, encoding: str | None = None) -> CheckedImport:
    """Check every row of ``path``; ``InvalidSubscriber`` when the file itself is unusable."""
    text = _decode(path, encoding)
    result = CheckedImport()
    seen: dict[str, int] = {}
    csv.field_size_limit(MAX_FIELD)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if not header or "email" not in [name.strip().lower() for name in header]:
            raise InvalidSubscriber(
                f"{path}:1: needs a header row with an 'email' column", field="email"
            )
        reader.fieldnames = [name.strip().lower() for name in header]
        for row in reader:
            line = reader.line_num
            try:
                entry = _entry(row)
            except DripError as error:
                result.problems.append(f"{path}:{line}: {error}")
                continue
            if entry.email in seen:
                result.duplicates += 1
                continue
            seen[entry.email] = line
            result.entries.append(entry)
    except csv.Error as error:
        # the record that failed is the one after the last line read
        reason = "a field is over 64 KiB" if "field limit" in str(error) else str(error)
        raise InvalidSubscriber(f"{path}:{reader.line_num + 1}: {reason}", field="path") from None
    return result


def _entry(row: dict[str, str | None]) -> Entry:
    zone = (row.get("timezone") or "").strip() or None
    if zone is not None and not is_timezone(zone):
        raise InvalidSubscriber(f"timezone: unknown IANA time zone {zone!r}", field="timezone")
    return Entry.clean(email=row.get("email") or "", name=row.get("name"), timezone=zone)


def _decode(path: Path, encoding: str | None) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidSubscriber(f"{path}: {error.strerror}", field="path") from None
    if encoding is None:
        for bom, name in (
            (codecs.BOM_UTF8, "utf-8-sig"),
            (codecs.BOM_UTF16_LE, "utf-16"),
            (codecs.BOM_UTF16_BE, "utf-16"),
        ):
            if data.startswith(bom):
                encoding = name
                break
    try:
        return data.decode(encoding or "utf-8")
    except LookupError:
        raise InvalidSubscriber(
            f"--encoding: unknown encoding {encoding!r}", field="path"
        ) from None
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InvalidSubscriber(
            f"{path}:{line}: the file is not {encoding or 'UTF-8'}: re-save it as UTF-8, "
            "or pass --encoding (e.g. --encoding latin-1)",
            field="path",
        ) from None


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: what makes a spreadsheet read a cell as a formula (OWASP's list)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet shows as text: one starting like a formula gets a
    leading apostrophe, as OWASP advises (a signup named ``=HYPERLINK(…)`` stays text)."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value

"""Course YAML → validated ``Course`` objects, with ``file:line: key: message`` errors.

The file is read with ruamel.yaml, which keeps the line of every key and list item;
pydantic then validates the structure, and each error's location is mapped back to
the line it came from.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    TypeAdapter,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from drip.core import addresses
from drip.core.exceptions import InvalidCourse, UnknownCourse
from drip.core.schedule import Pace
from drip.core.states import EmailKind

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SLUG = r"^[a-z0-9][a-z0-9_-]{0,99}$"
#: names of the emails that are not lessons: no day may take one as its id
OTHER_EMAILS = frozenset(kind.value for kind in EmailKind if kind != EmailKind.LESSON)


def _nonblank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\n" in value.strip() or "\r" in value:
        raise ValueError("must be a single line")
    return value.strip()


def _email(value: str) -> str:
    try:
        return addresses.normalized(value, smtputf8=True)
    except addresses.AddressError as error:
        raise ValueError(f"not an email address ({error})") from None


_http_url = TypeAdapter(HttpUrl)


def _url(value: str) -> str:
    try:
        return str(_http_url.validate_python(value))
    except ValidationError as error:
        raise ValueError(f"not a URL ({error.errors()[0]['msg']})") from None


Line = Annotated[str, AfterValidator(_nonblank)]
Email = Annotated[str, AfterValidator(_email)]
Url = Annotated[str, AfterValidator(_url)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Sender(_Strict):
    name: Line
    address: Email
    reply_to: Email | None = None


class ClassLink(_Strict):
    title: Line
    url: Url
    duration_minutes: int = Field(gt=0, le=600)
    thumbnail: Url | None = None


class SendIf(_Strict):
    """A day sent only to those who followed (``clicked``), or did not follow
    (``not_clicked``), an earlier day's class link in this run of the course, as it stands
    right before the day is sent."""

    clicked: str | None = Field(default=None, pattern=SLUG)
    not_clicked: str | None = Field(default=None, pattern=SLUG)

    @model_validator(mode="after")
    def _one(self) -> SendIf:
        if (self.clicked is None) == (self.not_clicked is None):
            raise ValueError("give one of clicked: DAY_ID or not_clicked: DAY_ID")
        return self

    @property
    def day_id(self) -> str:
        """The earlier day whose class link decides."""
        return str(self.clicked or self.not_clicked)

    def wants(self, clicked: bool) -> bool:
        """Is the day wanted, given whether that earlier day's link was followed?"""
        return clicked if self.clicked is not None else not clicked

    def __str__(self) -> str:
        return f"clicked {self.clicked}" if self.clicked else f"not_clicked {self.not_clicked}"


class Day(_Strict):
    id: str = Field(pattern=SLUG)
    subject: Line
    preheader: str = ""
    theme: str = ""
    class_: ClassLink = Field(alias="class")
    body: str = Field(min_length=1)
    template: str = Field(default="lesson", pattern=r"^[a-z0-9_-]+$")
    #: send this day only if an earlier day's class link was (not) followed
    send_if: SendIf | None = None

    @field_validator("id")
    @classmethod
    def _not_another_email(cls, value: str) -> str:
        if value in OTHER_EMAILS:
            raise ValueError(
                f"{value!r} is the name of another email ({', '.join(sorted(OTHER_EMAILS))}): "
                "choose another id"
            )
        return value


class AfterCourse(_Strict):
    """The email sent the day after the last lesson: what comes next."""

    subject: Line
    preheader: str = ""
    body: str = Field(min_length=1)


class Footer(_Strict):
    postal_address: Line
    disclaimer: str = Field(min_length=1)
    privacy: str = "We respect your privacy. Unsubscribe at any time."


class Course(_Strict):
    slug: str = Field(pattern=SLUG)
    title: Line
    description: str = ""
    sender: Sender
    send_at: time
    default_timezone: str
    send_days: tuple[Weekday, ...] = WEEKDAYS
    double_opt_in: bool = True
    welcome_email: bool = False
    goodbye_email: bool = False
    #: lessons link to the class through drip (``/c/…``), which notes the first click
    track_clicks: bool = True
    #: sent once, on the allowed day after the last lesson
    after_course: AfterCourse | None = None
    #: days added later reach those who had completed the course too
    evergreen: bool = False
    footer: Footer
    days: tuple[Day, ...] = Field(min_length=1)

    @field_validator("send_at", mode="before")
    @classmethod
    def _hh_mm(cls, value: Any) -> Any:
        if isinstance(value, time):
            return value
        if isinstance(value, int):  # YAML 1.1 reads 07:00 unquoted as a sexagesimal number
            return time(value // 60, value % 60) if 0 <= value < 24 * 60 else value
        if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("must be a local time as HH:MM, e.g. '07:00'")
        return value

    @field_serializer("send_at")
    def _dump_hh_mm(self, value: time) -> str:
        return value.strftime("%H:%M")

    @field_validator("default_timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        if not is_timezone(value):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Europe/London')")
        return value

    @field_validator("send_days")
    @classmethod
    def _some_days(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must name at least one weekday")
        return value

    @model_validator(mode="after")
    def _unique_day_ids(self) -> Course:
        seen: set[str] = set()
        for index, day in enumerate(self.days):
            if day.id in seen:
                raise _DayProblem(index, ["id"], f"duplicate day id {day.id!r}")
            if day.send_if is not None and day.send_if.day_id not in seen:
                which = "clicked" if day.send_if.clicked else "not_clicked"
                where = "a later day" if self.day(day.send_if.day_id) else "no day of this course"
                raise _DayProblem(
                    index,
                    ["send_if", which],
                    f"{day.send_if.day_id!r} is {where}: name an earlier day's id",
                )
            seen.add(day.id)
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.default_timezone)

    def zone_name_for(self, timezone: str | None) -> str:
        """A subscriber's own IANA zone name, else the course default's."""
        return timezone or self.default_timezone

    def zone_for(self, timezone: str | None) -> ZoneInfo:
        """A subscriber's own IANA zone, else the course default."""
        return ZoneInfo(timezone) if timezone else self.zone

    def send_time_for(self, send_at: str | None) -> time:
        """A subscriber's own hour for lessons (``HH:MM``), else the course's."""
        return time.fromisoformat(send_at) if send_at else self.send_at

    def pace(
        self,
        *,
        timezone: str | None,
        send_at: str | None = None,
        run: int = 1,
        paused_until: datetime | None = None,
    ) -> Pace:
        """When an enrollment of this course gets its lessons (``schedule.Pace``)."""
        return Pace(
            zone=self.zone_for(timezone),
            send_at=self.send_time_for(send_at),
            weekdays=self.weekdays,
            run=run,
            paused_until=paused_until,
        )

    @cached_property
    def weekdays(self) -> frozenset[int]:
        """Allowed send days as ``date.weekday()`` numbers (Monday is 0)."""
        return frozenset(WEEKDAYS.index(day) for day in self.send_days)

    def day(self, day_id: str) -> Day | None:
        return next((day for day in self.days if day.id == day_id), None)

    def day_number(self, day_id: str) -> int:
        """1-based position of a day in the course (what "Day 3 of 7" shows)."""
        return next(i for i, day in enumerate(self.days, start=1) if day.id == day_id)


class _DayProblem(ValueError):
    """A problem of the day at ``index``, at ``path`` inside it."""

    def __init__(self, index: int, path: list[str], message: str) -> None:
        super().__init__(message)
        self.index = index
        self.path = path


def is_timezone(name: str) -> bool:
    if not name or name.startswith("/") or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def load_course(path: Path) -> Course:
    """Read and validate one course file; raises ``InvalidCourse`` listing every problem."""
    label = _label(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidCourse(f"{label}: cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidCourse(f"{label}: not UTF-8 text") from None
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        data = yaml.load(text)
    except MarkedYAMLError as error:
        line, message = _yaml_problem(error, text)
        raise InvalidCourse(f"{label}:{line}: invalid YAML: {message}") from None
    except YAMLError as error:  # e.g. a control character, which YAML does not allow
        position = getattr(error, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        reason = str(error).strip().splitlines()[0]
        raise InvalidCourse(f"{label}:{line}: invalid YAML: {reason}") from None
    if not isinstance(data, CommentedMap):
        raise InvalidCourse(f"{label}:1: a course file must be a mapping of keys")
    try:
        return Course.model_validate(_plain(data))
    except ValidationError as error:
        problems = [_describe(label, data, err) for err in error.errors()]
        raise InvalidCourse(problems[0], problems=problems) from None


#: a line whose value opens a quote it does not close on that line
_OPEN_QUOTE = re.compile(r"""^\s*(?:- )?[\w.-]+:\s+(?P<q>["'])(?P<rest>.*)$""")


def _yaml_problem(error: MarkedYAMLError, text: str) -> tuple[int, str]:
    """The line a YAML error is about, and what to do, in the teacher's words: a quote
    left open is reported where it was opened (the parser trips lines later), and an
    unquoted ': ' inside a value comes with how to quote it."""
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark else 1
    problem = str(error.problem or "")
    opened = _unclosed_quote(text, before=line)
    if "quoted scalar" in str(error.context or "") and error.context_mark is not None:
        opened = error.context_mark.line + 1
    if opened is not None:
        return opened, "a quoted value starts here and its quote is never closed: close it"
    if "mapping values are not allowed" in problem:
        return line, ("a value with ': ' in it must be quoted, e.g. subject: \"Day 1: Hips\"")
    return line, problem


def _unclosed_quote(text: str, *, before: int) -> int | None:
    """The last line before line ``before`` whose value opens a quote it does not close on
    that line (YAML allows a quoted value over several lines, so the parser only trips
    later, where the text stops making sense)."""
    found = None
    for number, content in enumerate(text.splitlines()[: before - 1], start=1):
        match = _OPEN_QUOTE.match(content)
        if match is None:
            continue
        rest = match["rest"]
        if match["q"] == '"':
            closed = '"' in rest.replace('\\"', "")  # \" escapes a double quote
        else:
            closed = "'" in rest.replace("''", "")  # '' escapes a single quote
        if not closed:
            found = number
    return found


def _plain(node: Any) -> Any:
    """ruamel's round-trip types → plain dicts/lists (pydantic wants builtins)."""
    if isinstance(node, CommentedMap):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(item) for item in node]
    return node


def _describe(label: str, data: CommentedMap, error: Any) -> str:
    loc = list(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    ctx_error = (error.get("ctx") or {}).get("error")
    if isinstance(ctx_error, _DayProblem):
        loc = ["days", ctx_error.index, *ctx_error.path]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "missing":
        message = "required key is missing"
    return f"{label}:{_line_of(data, loc)}: {_dotted(loc)}: {message}"


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not isinstance(part, str) or part.startswith(("function-", "literal[")):
            continue  # pydantic's union/validator labels are not keys
        else:
            text += f".{part}" if text else part
    return text or "(top level)"


def _line_of(data: CommentedMap, loc: list[Any]) -> int:
    """The 1-based line of the deepest key in ``loc`` that exists in the YAML."""
    node: Any = data
    line = 1
    for part in loc:
        if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedMap | CommentedSeq) and node.lc.line is not None:
            # a missing key: point at the mapping that should hold it
            line = max(line, node.lc.line + 1)
            break
    return line


def _label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Catalog:
    """The courses in a directory, looked up by slug.

    A course file that does not validate, or whose slug another file also uses, is left
    out and listed in ``problems``: the other courses carry on, and whoever runs drip
    hears about it (``drip course validate`` and ``send-due`` report every problem).
    ``refresh`` re-reads the directory when a file in it changed, so a running process
    follows the teacher's edits.
    """

    def __init__(self, courses: dict[str, Course], *, directory: Path | None = None) -> None:
        self._courses = courses
        self.directory = directory
        self.problems: list[str] = []
        #: the file each course was read from
        self.paths: dict[str, Path] = {}
        self._stamp: tuple[tuple[str, float], ...] = ()

    @classmethod
    def from_dir(cls, directory: Path, *, strict: bool = True) -> Catalog:
        """The courses in ``directory``; ``strict`` raises ``InvalidCourse`` listing every
        problem instead of leaving the broken courses out."""
        catalog = cls({}, directory=directory)
        catalog.refresh()
        if strict and catalog.problems:
            raise InvalidCourse(catalog.problems[0], problems=catalog.problems)
        return catalog

    def refresh(self) -> bool:
        """Re-read the directory if a course file was added, removed or changed since
        the last read; True when it was re-read."""
        assert self.directory is not None, "only a catalog read from a directory refreshes"
        if not self.directory.is_dir():
            raise InvalidCourse(
                f"no course folder at {self.directory.resolve()} (DRIP_COURSES_DIR="
                f"{self.directory})"
            )
        files = course_files(self.directory)
        stamp = tuple((str(path), path.stat().st_mtime) for path in files)
        if stamp == self._stamp:
            return False
        courses: dict[str, Course] = {}
        problems: list[str] = []
        paths: dict[str, Path] = {}
        for path in files:
            try:
                course = load_course(path)
            except InvalidCourse as error:
                problems.extend(error.problems)
                continue
            if course.slug in paths:
                problems.append(
                    f"{_label(path)}:1: slug: {course.slug!r} is also the slug of "
                    f"{_label(paths[course.slug])}; neither is used until one is renamed"
                )
                courses.pop(course.slug, None)
                continue
            paths[course.slug] = path
            courses[course.slug] = course
        self._courses, self.problems, self._stamp = courses, problems, stamp
        self.paths = {slug: path for slug, path in paths.items() if slug in courses}
        return True

    def __iter__(self) -> Any:
        return iter(self._courses.values())

    def __len__(self) -> int:
        return len(self._courses)

    def get(self, slug: str) -> Course:
        try:
            return self._courses[slug]
        except KeyError:
            known = ", ".join(sorted(self._courses)) or "none"
            raise UnknownCourse(f"unknown course {slug!r} (known: {known})") from None

    def find(self, slug: str) -> Course | None:
        """The course ``slug``, or None (a course removed since its emails went out)."""
        return self._courses.get(slug)

    def default(self, preferred: str | None = None) -> Course:
        """The course a signup without ``course`` joins: the configured one or the only one."""
        if preferred:
            return self.get(preferred)
        if len(self._courses) == 1:
            return next(iter(self._courses.values()))
        raise UnknownCourse("several courses exist: name one (or set DRIP_DEFAULT_COURSE)")


#: domains reserved for examples (RFC 2606): fine in a template, wrong in a real course
_PLACEHOLDER = re.compile(r"\bexample\.(com|org|net)\b", re.IGNORECASE)


def course_warnings(path: Path) -> list[str]:
    """Things that validate but are probably mistakes, one ``file:line: warning`` each."""
    label = _label(path)
    warnings = []
    placeholders = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        if "{{" in line or "{%" in line:
            warnings.append(
                f"{label}:{number}: warning: '{{{{' is shown as typed: course text is "
                "Markdown, not a template"
            )
        if _PLACEHOLDER.search(line):
            placeholders.append(str(number))
    if placeholders:
        warnings.append(
            f"{label}:{placeholders[0]}: warning: the course still uses example.com "
            f"addresses or links (lines {', '.join(placeholders)}): replace them with your own"
        )
    return warnings


def course_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])

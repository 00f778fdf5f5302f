"""``drip course``: write, list, validate, preview and test-send courses."""

from __future__ import annotations

import json
import secrets
import tempfile
import webbrowser
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drip.cli._common import DripGroup, catalog, cell, console, say, settings
from drip.core.exceptions import InvalidCourse

if TYPE_CHECKING:
    from drip.core.courses import Course
    from drip.sending.compose import Composer

app = typer.Typer(
    cls=DripGroup, no_args_is_help=True, help="Write, check, preview and test-send courses."
)
#: where ``drip course preview --serve`` listens by default
PREVIEW_PORT = 8025


@app.command()
def new(
    slug: Annotated[str, typer.Argument(help="The new course's slug, e.g. pilates-basics.")],
    title: Annotated[str | None, typer.Option(help="Its title; default: from the slug.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write; default: DRIP_COURSES_DIR/SLUG.yaml."),
    ] = None,
) -> None:
    """Write a commented 7-day course that validates, ready to fill in.

    Example: drip course new pilates-basics --title "Pilates Basics"
    """
    import os
    import re
    import tempfile
    from string import Template

    from drip.core.courses import SLUG, Catalog, load_course

    if not re.fullmatch(SLUG, slug):
        raise InvalidCourse(
            f"{slug!r}: a slug is lowercase letters, digits, '-' and '_', starting with a "
            "letter or digit (e.g. pilates-basics)"
        )
    path = output or settings().courses_dir / f"{slug}.yaml"
    if path.exists():
        raise InvalidCourse(f"{path}: already exists; choose another slug or --output")
    if path.parent.is_dir() and Catalog.from_dir(path.parent, strict=False).find(slug):
        raise InvalidCourse(f"{slug!r} is already the slug of a course in {path.parent}")
    name = " ".join((title or slug.replace("-", " ").replace("_", " ").title()).split())
    skeleton = Template((Path(__file__).parent.parent / "course_skeleton.yaml").read_text())
    text = skeleton.substitute(
        slug=slug, title=name, file=path, title_yaml=json.dumps(name, ensure_ascii=False)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Checked in a hidden file beside the target, then linked into place (never over
        # a file made meanwhile): a course directory never holds a course that fails.
        handle, draft = tempfile.mkstemp(prefix=f".{slug}.", suffix=".draft", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as target:
                target.write(text)
            os.chmod(draft, 0o644)  # a course file, as readable as the others
            course = load_course(Path(draft))
            os.link(draft, path)
        finally:
            os.unlink(draft)
    except InvalidCourse as error:
        problem = error.problems[0].split(": ", 1)[-1]
        raise InvalidCourse(f"--title {title!r}: {problem}") from None
    except FileExistsError:
        raise InvalidCourse(f"{path}: already exists; choose another slug or --output") from None
    except OSError as error:
        raise InvalidCourse(f"{path}: cannot write: {error.strerror}") from None
    typer.echo(f"wrote {path} ({course.slug}, {len(course.days)} days)")
    typer.echo(f"next: fill in the example.com lines, then: drip course validate {path}")


@app.command("list")
def list_courses(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """Show the courses in DRIP_COURSES_DIR.

    Example: drip course list --json
    """
    from rich.table import Table

    rows = [
        {
            "slug": course.slug,
            "title": course.title,
            "days": len(course.days),
            "send_at": course.send_at.strftime("%H:%M"),
            "timezone": course.default_timezone,
            "double_opt_in": course.double_opt_in,
        }
        for course in catalog()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("slug", "title", "days", "send at", "time zone", "opt-in")
    for row in rows:
        table.add_row(
            cell(row["slug"]),
            cell(row["title"]),
            str(row["days"]),
            row["send_at"],
            cell(row["timezone"]),
            "double" if row["double_opt_in"] else "single",
        )
    console().print(table)


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Course files; default: every course in DRIP_COURSES_DIR."),
    ] = None,
) -> None:
    """Check course files and render every email of each once; exit 1 on any problem.
    Without paths, the course directory is checked as `send-due` reads it (two files with
    one slug are a problem). Warnings (placeholder addresses, template braces in lesson
    text) do not fail the check.

    Example: drip course validate courses/yin-immersion.yaml
    """
    from drip.core.courses import Catalog, course_warnings, load_course

    if paths:
        courses, problems = [], []
        for path in paths:
            try:
                courses.append((path, load_course(path)))
            except InvalidCourse as error:
                problems += error.problems
    else:
        folder = Catalog.from_dir(settings().courses_dir, strict=False)
        courses = [(folder.paths[course.slug], course) for course in folder]
        problems = list(folder.problems)
        if not courses and not problems:
            raise InvalidCourse(f"{settings().courses_dir}: no course files (*.yaml) found")
    for path, course in courses:
        rendering = _render_problems(path, course)
        problems += rendering
        for warning in course_warnings(path):
            typer.echo(warning, err=True)
        if not rendering:
            typer.echo(f"{path}: ok ({course.slug}, {len(course.days)} days)")
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)


def _render_problems(path: Path, course: Course) -> list[str]:
    """Every email of the course rendered once, so template errors show before sending."""
    from drip.sending.compose import render_problems

    return render_problems(
        composer=_preview_composer(), course=course, label=str(path), now=datetime.now(UTC)
    )


def _preview_composer() -> Composer:
    # A throwaway key: previews never need links that work, nor the real key file.
    from drip.core.tokens import Tokens
    from drip.sending.compose import Composer

    tokens = Tokens([secrets.token_urlsafe(32)], confirm_max_age_seconds=3600)
    return Composer(settings=settings(), tokens=tokens)


def _serve_previews(host: str, port: int) -> None:
    import uvicorn

    from drip.core.config import is_loopback_host
    from drip.core.exceptions import ConfigError
    from drip.web.preview import create_preview_app
    from drip.web.server import listen

    if not is_loopback_host(host):
        raise ConfigError(f"--host {host}: previews are served on loopback only")
    listener = listen(host, port)  # a busy port: one line, before anything is printed
    typer.echo(f"previews on http://{host}:{port}/ (Ctrl-C stops)")
    server = uvicorn.Server(
        uvicorn.Config(
            create_preview_app(settings(), host=host),
            log_level="warning",
            timeout_graceful_shutdown=1,  # open pages hold an event stream: do not wait for them
        )
    )
    server.run(sockets=[listener])


@app.command("send-test")
def send_test(
    course: Annotated[str, typer.Argument(help="Course slug.")],
    which: Annotated[
        str,
        typer.Argument(help="Day number (1-7), day id, or confirm|welcome|goodbye|after_course."),
    ],
    to: Annotated[str, typer.Option("--to", help="Your address: where the test goes.")],
) -> None:
    """Send one email of a course, as a subscriber gets it, to yourself through DRIP_SMTP_URL.
    The subject starts with [Test]; no subscriber, lesson or statistic is touched.

    Example: drip course send-test yin-immersion 3 --to me@example.org
    """
    from drip.sending.testsend import send_test as send

    reply = send(settings(), catalog().get(course), which, to, now=datetime.now(UTC))
    say(f"sent {which} of {course} to {to}: {reply}")


class Format(StrEnum):
    html = "html"
    text = "text"
    eml = "eml"


@app.command()
def preview(
    course: Annotated[str | None, typer.Argument(help="Course slug.", show_default=False)] = None,
    day: Annotated[
        str | None,
        typer.Argument(
            help="Day number (1-7), day id, or confirm|welcome|goodbye|after_course.",
            show_default=False,
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Serve every email of every course in the browser, re-rendered as you edit.",
        ),
    ] = False,
    host: Annotated[str, typer.Option(help="With --serve: loopback address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="With --serve: port.")] = PREVIEW_PORT,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What to print.")] = Format.html,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the HTML in a browser (writes a temp file).")
    ] = False,
) -> None:
    """Render an email exactly as a (sample) subscriber would receive it, or with --serve
    every email of every course in the browser, following your edits (errors shown as
    file:line in the page).

    Example: drip course preview yin-immersion 1 --format eml -o day1.eml
    Example: drip course preview --serve
    """
    from email import policy
    from email.parser import BytesParser

    from drip.sending.compose import preview as preview_message

    if serve:
        _serve_previews(host, port)
        return
    if course is None or day is None:
        raise typer.BadParameter("give COURSE and DAY, or --serve", param_hint="COURSE DAY")
    message = preview_message(
        composer=_preview_composer(), course=catalog().get(course), which=day, now=datetime.now(UTC)
    )
    parsed = BytesParser(policy=policy.default).parsebytes(message.data)
    if fmt is Format.eml:
        content = message.data.decode("ascii", "replace").replace("\r\n", "\n")
    else:
        part = parsed.get_body(("html",) if fmt is Format.html else ("plain",))
        content = part.get_content() if part is not None else ""
    if output:
        output.write_text(content, encoding="utf-8")
        typer.echo(f"wrote {output}")
    elif not open_browser:
        typer.echo(content, nl=False)
    if open_browser:  # always the HTML, in a file of its own (never into -o's .eml)
        handle, name = tempfile.mkstemp(suffix=".html", prefix="drip-preview-")
        html_part = parsed.get_body(("html",))
        with open(handle, "w", encoding="utf-8") as target:
            target.write(html_part.get_content() if html_part else "")
        if webbrowser.open(Path(name).as_uri()):
            typer.echo(f"opened {name} in a browser")
        else:
            typer.echo(f"no browser found here; the preview is in {name}")

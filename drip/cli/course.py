"""``drip course``: list, validate and preview course YAML."""

from __future__ import annotations

import secrets
import tempfile
import webbrowser
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from drip.cli._common import DripGroup, catalog, console, settings
from drip.exceptions import InvalidCourse

if TYPE_CHECKING:
    from drip.compose import Composer
    from drip.courses import Course

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="Inspect and check courses.")


@app.command("list")
def list_courses() -> None:
    """Show the courses in DRIP_COURSES_DIR.

    Example: drip course list
    """
    from rich.table import Table

    table = Table("slug", "title", "days", "send at", "time zone", "opt-in")
    for course in catalog():
        table.add_row(
            course.slug,
            course.title,
            str(len(course.days)),
            course.send_at.strftime("%H:%M"),
            course.default_timezone,
            "double" if course.double_opt_in else "single",
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
    from drip.courses import Catalog, course_warnings, load_course

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
    from drip.compose import render_problems

    return render_problems(
        composer=_preview_composer(), course=course, label=str(path), now=datetime.now(UTC)
    )


def _preview_composer() -> Composer:
    # A throwaway key: previews never need links that work, nor the real key file.
    from drip.compose import Composer
    from drip.tokens import Tokens

    tokens = Tokens([secrets.token_urlsafe(32)], confirm_max_age_seconds=3600)
    return Composer(settings=settings(), tokens=tokens)


class Format(StrEnum):
    html = "html"
    text = "text"
    eml = "eml"


@app.command()
def preview(
    course: Annotated[str, typer.Argument(help="Course slug.")],
    day: Annotated[
        str, typer.Argument(help="Day number (1-7), day id, or confirm|welcome|goodbye.")
    ],
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What to print.")] = Format.html,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file.")] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the HTML in a browser (writes a temp file).")
    ] = False,
) -> None:
    """Render an email exactly as a (sample) subscriber would receive it.

    Example: drip course preview yin-immersion 1 --format eml -o day1.eml
    """
    from email import policy
    from email.parser import BytesParser

    from drip.compose import preview as preview_message

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

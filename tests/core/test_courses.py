"""Course YAML loading: the shipped course, and every error with its file:line and key."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from drip.core.courses import Catalog, load_course
from drip.core.exceptions import InvalidCourse, UnknownCourse
from tests.fixtures import SHIPPED_COURSE

SHIPPED = SHIPPED_COURSE.read_text()


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    assert old in SHIPPED, old
    text = SHIPPED.replace(old, new, 1)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    return path, text


def test_shipped_course_is_valid() -> None:
    """The yin immersion validates: 7 days, unique ids, disclaimer and privacy line present."""
    course = load_course(SHIPPED_COURSE)
    assert course.slug == "yin-immersion"
    assert len(course.days) == 7
    assert len({day.id for day in course.days}) == 7
    assert "physician" in course.footer.disclaimer
    assert "unsubscribe at any time" in course.footer.privacy.lower()
    for day in course.days:
        words = len(day.body.split())
        assert 150 <= words <= 300, (day.id, words)
        assert day.class_.duration_minutes >= 45
        assert day.class_.url.startswith("https://")


@pytest.mark.parametrize(
    ("old", "new", "needle", "expected"),
    [
        (
            'url: "https://example.com/classes/yin-day-3-spine"',
            'url: "not a url"',
            "not a url",
            "days[2].class.url: not a URL",
        ),
        ('send_at: "07:00"', 'send_at: "7am"', "7am", "send_at: must be a local time as HH:MM"),
        (
            'default_timezone: "Europe/London"',
            'default_timezone: "Mars/Olympus"',
            "Mars/Olympus",
            "default_timezone: unknown IANA time zone 'Mars/Olympus'",
        ),
        (
            'subject: "Day 2: Make room in the hips"',
            'subject: "  "',
            'subject: "  "',
            "days[1].subject: must not be empty",
        ),
        (
            "  - id: hips\n",
            "  - id: upper-back-shoulders  # again\n",
            "# again",
            "days[1].id: duplicate day id 'upper-back-shoulders'",
        ),
        (
            '    theme: "Spine"\n',
            '    theme: "Spine"\n    colour: blue\n',
            "colour: blue",
            "days[2].colour: unknown key",
        ),
        (
            "      duration_minutes: 55\n",
            "      duration_minutes: -5\n",
            "duration_minutes: -5",
            "days[1].class.duration_minutes:",
        ),
        (
            'address: "hello@example.com"',
            'address: "hello-at-example"',
            "hello-at-example",
            "sender.address: not an email address",
        ),
        ("send_at:", "send_days: [mon, funday]\nsend_at:", "funday", "send_days[1]:"),
    ],
)
def test_errors_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, needle: str, expected: str
) -> None:
    """Each invalid value is reported as `file:line: key: message` at the line it is on."""
    path, text = _broken(tmp_path, old, new)
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    line = _line_of(text, needle)
    assert any(p.startswith(f"{path.name}:{line}: {expected}") for p in caught.value.problems), (
        caught.value.problems
    )


def test_missing_key_points_at_its_parent(tmp_path: Path) -> None:
    """A required key that is absent is reported on the mapping that should hold it."""
    path, text = _broken(tmp_path, "      duration_minutes: 60\n", "")
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    assert "days[0].class.duration_minutes: required key is missing" in str(caught.value)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    """Broken YAML syntax is reported with its line, not a parser traceback."""
    path = tmp_path / "bad.yaml"
    path.write_text('slug: x\ntitle: "unterminated\nsender: {\n')
    with pytest.raises(InvalidCourse, match=r"^bad.yaml:\d+: invalid YAML"):
        load_course(path)


def test_a_control_character_is_an_error_with_its_line(tmp_path: Path) -> None:
    """A character YAML does not allow (DEL, say) is one problem with its line, not a
    traceback."""
    path, text = _broken(tmp_path, 'title: "7-Day', 'title: "7-\x7fDay')
    with pytest.raises(InvalidCourse, match=rf"^broken.yaml:{_line_of(text, 'title:')}: invalid"):
        load_course(path)


def test_a_day_id_may_not_name_another_email(tmp_path: Path) -> None:
    """``confirm`` as a day id would make "preview confirm" ambiguous: refused."""
    path, text = _broken(tmp_path, "  - id: hips\n", "  - id: confirm\n")
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    assert (
        f"broken.yaml:{_line_of(text, '- id: confirm')}: days[1].id: 'confirm' is the name"
        in str(caught.value)
    )


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    """A key given twice is refused rather than silently overwritten."""
    path, _ = _broken(tmp_path, 'send_at: "07:00"', 'send_at: "07:00"\nsend_at: "08:00"')
    with pytest.raises(InvalidCourse, match="invalid YAML"):
        load_course(path)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    """Every problem in a file is listed, not only the first."""
    text = SHIPPED.replace('send_at: "07:00"', 'send_at: "25:00"').replace(
        'default_timezone: "Europe/London"', 'default_timezone: "Nowhere"'
    )
    path = tmp_path / "two.yaml"
    path.write_text(text)
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    assert len(caught.value.problems) == 2


def test_unquoted_send_at_is_read_as_a_time(tmp_path: Path) -> None:
    """`send_at: 07:30` without quotes (a YAML 1.1 sexagesimal) still means 07:30."""
    path, _ = _broken(tmp_path, 'send_at: "07:00"', "send_at: 07:30")
    assert load_course(path).send_at.strftime("%H:%M") == "07:30"


def test_catalog_finds_courses_and_names_unknown_ones(tmp_path: Path) -> None:
    """A catalog looks courses up by slug and lists the known ones on a miss."""
    (tmp_path / "a.yaml").write_text(SHIPPED)
    catalog = Catalog.from_dir(tmp_path)
    assert catalog.default().slug == "yin-immersion"
    with pytest.raises(UnknownCourse, match="known: yin-immersion"):
        catalog.get("pilates")


def test_catalog_refuses_a_slug_used_twice(tmp_path: Path) -> None:
    """Two files with the same slug are an error, not a silent shadowing: strictly read,
    the folder is refused; leniently, neither course is used and the problem is listed."""
    (tmp_path / "a.yaml").write_text(SHIPPED)
    (tmp_path / "b.yaml").write_text(SHIPPED)
    with pytest.raises(InvalidCourse, match="is also the slug of a.yaml"):
        Catalog.from_dir(tmp_path)
    lenient = Catalog.from_dir(tmp_path, strict=False)
    assert len(lenient) == 0 and len(lenient.problems) == 1


def test_a_broken_course_stops_only_itself_and_edits_are_picked_up(tmp_path: Path) -> None:
    """A course file that fails to load leaves the others working; fixing or editing a
    file is seen by the next refresh, and only then."""
    (tmp_path / "good.yaml").write_text(SHIPPED)
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        SHIPPED.replace("slug: yin-immersion", "slug: other").replace(
            'send_at: "07:00"', 'send_at: "7am"'
        )
    )
    catalog = Catalog.from_dir(tmp_path, strict=False)
    assert [c.slug for c in catalog] == ["yin-immersion"]
    assert catalog.problems and "broken.yaml" in catalog.problems[0]
    assert catalog.refresh() is False, "nothing changed"
    broken.write_text(SHIPPED.replace("slug: yin-immersion", "slug: other"))
    os.utime(broken, (time.time() + 5, time.time() + 5))
    assert catalog.refresh() is True
    assert sorted(c.slug for c in catalog) == ["other", "yin-immersion"] and not catalog.problems


def test_an_unclosed_quote_is_reported_where_it_was_opened(tmp_path: Path) -> None:
    """A subject whose quote is never closed: the parser trips lines later, but the error
    names the line that opened the quote and says to close it."""
    path, text = _broken(
        tmp_path,
        'subject: "Day 1: Soften the upper back and shoulders"',
        'subject: "Day 1: Soften the upper back and shoulders',
    )
    line = _line_of(text, 'subject: "Day 1')
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    assert str(caught.value) == (
        f"broken.yaml:{line}: invalid YAML: a quoted value starts here and its quote is "
        "never closed: close it"
    )


def test_an_unquoted_colon_in_a_value_says_how_to_quote_it(tmp_path: Path) -> None:
    """`subject: Day 1: Hips` (a second ': ' unquoted) names its line and shows the fix."""
    path, text = _broken(
        tmp_path,
        'subject: "Day 1: Soften the upper back and shoulders"',
        "subject: Day 1: Soften the upper back and shoulders",
    )
    line = _line_of(text, "subject: Day 1")
    with pytest.raises(InvalidCourse) as caught:
        load_course(path)
    assert str(caught.value) == (
        f"broken.yaml:{line}: invalid YAML: a value with ': ' in it must be quoted, e.g. "
        'subject: "Day 1: Hips"'
    )

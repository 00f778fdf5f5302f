"""Templates: MJML compiled once, strict Jinja, Markdown to HTML and to text."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from drip.core.courses import Course
from drip.core.exceptions import TemplateError
from drip.core.states import EmailKind
from drip.sending.compose import Composer, Recipient, resume_note
from drip.sending.render import Renderer, default_templates_dir, markdown_html, markdown_text
from tests.fixtures import make_settings

NOW = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)


def test_mjml_is_compiled_once_for_many_recipients(composer: Composer, course: Course) -> None:
    """Sending a day to 50 people compiles the lesson MJML once, not per recipient."""
    for n in range(50):
        recipient = Recipient(f"p{n}@example.org", f"P{n}", f"uid{n}", "UTC")
        composer.lesson(course=course, day=course.days[n % 7], recipient=recipient, now=NOW)
    assert composer.renderer.mjml_compilations == 1


def test_missing_variable_is_an_error_not_a_blank(tmp_path: Path, course: Course) -> None:
    """StrictUndefined: a template naming an unknown variable fails instead of rendering blank."""
    _copy_templates(tmp_path)
    lesson = tmp_path / "lesson.txt"
    lesson.write_text(lesson.read_text() + "{{ no_such_thing }}\n")
    composer = Composer(settings=make_settings(tmp_path, templates_dir=tmp_path))
    with pytest.raises(TemplateError, match="no_such_thing"):
        composer.lesson(
            course=course,
            day=course.days[0],
            now=NOW,
            recipient=Recipient("x@example.org", "Ana", "u1", "UTC"),
        )


def test_broken_mjml_names_the_file_and_line(tmp_path: Path) -> None:
    """A Jinja syntax error in a template names the file and the line (of the template as
    written, not of the HTML MJML makes of it)."""
    _copy_templates(tmp_path)
    (tmp_path / "lesson.mjml").write_text(
        "<mj-section>\n<mj-column>\n<mj-text>{% if %}</mj-text></mj-column></mj-section>"
    )
    with pytest.raises(TemplateError, match=r"lesson\.mjml:3: "):
        Renderer(tmp_path).html_template("lesson")
    (tmp_path / "lesson.txt").write_text("Hi\n\n{{ name }\n")
    with pytest.raises(TemplateError, match=r"lesson\.txt:3: "):
        Renderer(tmp_path).text_template("lesson")


def test_markdown_escapes_raw_html() -> None:
    """HTML inside course Markdown is shown as text, never injected into the email."""
    html = markdown_html("Hello <script>alert(1)</script> **there**")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<strong>there</strong>" in html


def test_markdown_text_keeps_links_and_lists() -> None:
    """The text part shows link targets as URLs and lists one item per line."""
    text = markdown_text("See **the [class](https://example.com/c)**.\n\n- one\n- two\n")
    assert text == "See the class (https://example.com/c).\n\n- one\n- two"


def test_html_escapes_subscriber_names(composer: Composer, course: Course) -> None:
    """A name with markup is escaped in the HTML part and kept as typed in the text part."""
    message = composer.lesson(
        course=course,
        day=course.days[0],
        now=NOW,
        recipient=Recipient("x@example.org", "<b>Bo</b> & Co", "u1", "UTC"),
    )
    from email import message_from_bytes, policy

    parsed = message_from_bytes(message.data, policy=policy.default)
    assert "&lt;b&gt;Bo&lt;/b&gt; &amp; Co" in parsed.get_body(("html",)).get_content()
    assert "Hi <b>Bo</b> & Co," in parsed.get_body(("plain",)).get_content()


def test_templates_that_transform_names_still_render_correctly(
    tmp_path: Path, course: Course
) -> None:
    """A template using the name in a way splicing cannot reproduce falls back to full renders."""
    _copy_templates(tmp_path)
    lesson = tmp_path / "lesson.txt"
    lesson.write_text(
        lesson.read_text().replace("Hi {{ greeting_name }},", "Hi {{ name | upper }}!")
    )
    composer = Composer(settings=make_settings(tmp_path, templates_dir=tmp_path))
    message = composer.lesson(
        course=course,
        day=course.days[0],
        now=NOW,
        recipient=Recipient("x@example.org", "Ana", "u1", "UTC"),
    )
    assert composer._prepared[(course.slug, course.days[0].id)].spliced is None
    assert b"Hi ANA!" in message.data


def _copy_templates(target: Path) -> None:
    for source in default_templates_dir().iterdir():
        (target / source.name).write_text(source.read_text())


def test_confirmation_welcome_goodbye_are_spliced_and_exact(
    composer: Composer, course: Course
) -> None:
    """Confirmation, welcome and goodbye are rendered once per course and finished per
    recipient: each copy decodes to exactly what a full render for that recipient gives."""
    history = {"upper-back-shoulders": "sent"}
    people = [
        Recipient("a@example.org", "", "u1", "Europe/London"),
        Recipient("b@example.org", 'Zoë & "Co" <b>', "u2", "Pacific/Auckland"),
    ]
    for kind in (EmailKind.CONFIRM, EmailKind.WELCOME, EmailKind.GOODBYE):
        for person in people:
            message = composer.transactional(
                kind,
                course=course,
                recipient=person,
                key=f"{kind}:k",
                now=NOW,
                signup_uid="s1",
                history=history,
            )
            prepared = composer._prepared[(course.slug, kind)]
            assert prepared.spliced is not None, kind
            parsed = message_from_bytes(message.data, policy=policy.default)
            text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
            context = {
                **prepared.context,
                "name": person.name,
                "greeting_name": person.name or "there",
                "timezone": person.timezone,
                "unsubscribe_url": composer.links.unsubscribe(person.uid),
                "resume": resume_note(course, history),
            }
            if kind == EmailKind.CONFIRM:
                link = re.search(r"(http\S+/confirm/(\S+))", text)
                assert link and composer.tokens.read_confirm(link.group(2))[0] == "s1"
                context["confirm_url"] = link.group(1)
                assert "with day 2 of 7" in " ".join(text.split())
            if "unsubscribe_url" not in prepared.slots:
                context["unsubscribe_url"] = None
            full = composer.renderer.render(prepared.template, context)
            same_lines = str.splitlines  # the wire has CRLF, a render LF
            assert same_lines(text) == same_lines(full.text), kind
            assert same_lines(html) == same_lines(full.html), kind

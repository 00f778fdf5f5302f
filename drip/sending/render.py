"""Email templates: MJML compiled once per template, Jinja rendered per recipient.

A template ``NAME`` is ``NAME.mjml`` (the content of ``_layout.mjml``) plus its text
twin ``NAME.txt``. The MJML is compiled to HTML the first time it is used and the
resulting Jinja template is cached, so rendering for a recipient is only a Jinja render.
Rendering is strict: an undefined variable raises ``TemplateError`` (``drip course
validate`` renders every email once, so this shows up before any subscriber sees it).
"""

from __future__ import annotations

import functools
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from markupsafe import Markup

from drip.core.exceptions import TemplateError

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

LAYOUT = "_layout.mjml"
CONTENT_MARKER = "<!-- content -->"


@functools.cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "typographer": False})


def default_templates_dir() -> Path:
    """``emails/`` inside an installed wheel, else the one beside the package in a checkout."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "emails"
    return packaged if packaged.is_dir() else package.parent / "emails"


@dataclass(frozen=True)
class Rendered:
    html: str
    text: str


class Renderer:
    """Compiles and caches templates from one directory; safe to share between threads."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        self.directory = templates_dir or default_templates_dir()
        loader = jinja2.FileSystemLoader(self.directory)
        self._html_env = jinja2.Environment(
            loader=loader, autoescape=True, undefined=jinja2.StrictUndefined
        )
        self._text_env = jinja2.Environment(
            loader=loader,
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )
        self._compiled: dict[str, jinja2.Template] = {}
        self._lock = threading.Lock()
        #: how many times MJML was compiled (once per template, whatever the recipients)
        self.mjml_compilations = 0

    def html_template(self, name: str) -> jinja2.Template:
        template = self._compiled.get(name)
        if template is None:
            with self._lock:
                template = self._compiled.get(name) or self._compile(name)
                self._compiled[name] = template
        return template

    def text_template(self, name: str) -> jinja2.Template:
        try:
            return self._text_env.get_template(f"{name}.txt")
        except jinja2.TemplateError as error:
            raise TemplateError(_where(self.directory / f"{name}.txt", error)) from None

    def render(self, name: str, context: dict[str, Any]) -> Rendered:
        html_template, text_template = self.html_template(name), self.text_template(name)
        try:
            return Rendered(html_template.render(context), text_template.render(context))
        except jinja2.TemplateError as error:
            raise TemplateError(f"template {name!r}: {error}") from None

    def _compile(self, name: str) -> jinja2.Template:
        try:
            layout = (self.directory / LAYOUT).read_text(encoding="utf-8")
            content = (self.directory / f"{name}.mjml").read_text(encoding="utf-8")
        except OSError as error:
            raise TemplateError(
                f"email template {name!r}: {error.strerror}: {error.filename}"
            ) from None
        try:  # Jinja syntax first, so an error names the line of the .mjml file itself
            self._html_env.parse(content)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(_where(self.directory / f"{name}.mjml", error)) from None
        try:
            from mjml import mjml2html

            html = mjml2html(layout.replace(CONTENT_MARKER, content))
        except Exception as error:  # mrml raises its own error types
            raise TemplateError(f"{self.directory / (name + '.mjml')}: MJML: {error}") from None
        self.mjml_compilations += 1
        try:
            return self._html_env.from_string(html)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{self.directory / (name + '.mjml')}: {error}") from None


def _where(path: Path, error: jinja2.TemplateError) -> str:
    """``file:line: message`` for a syntax error, ``file: message`` otherwise."""
    if isinstance(error, jinja2.TemplateSyntaxError) and error.lineno:
        return f"{path}:{error.lineno}: {error.message}"
    return f"{path}: {error}"


def markdown_html(source: str) -> Markup:
    """Course Markdown as safe HTML (raw HTML in the source is escaped, not passed through)."""
    return Markup(_markdown().render(source))


def markdown_text(source: str, *, width: int = 72) -> str:
    """Course Markdown as readable plain text: emphasis markers dropped, links as URLs."""
    blocks: list[str] = []
    items: list[str] | None = None  # the list being collected, one string per paragraph
    marker = ""  # "- " or "3. " until the item's first paragraph takes it
    number = 0
    for token in _markdown().parse(source):
        if token.type in ("bullet_list_open", "ordered_list_open"):
            items, number = [], 0
        elif token.type in ("bullet_list_close", "ordered_list_close") and items is not None:
            blocks.append("\n".join(items))
            items = None
        elif token.type == "list_item_open":
            number += 1
            marker = f"{number}. " if token.info else "- "
        elif token.type == "inline":
            text = _inline_text(token.children or [])
            if items is not None:
                indent = " " * max(len(marker), 2)
                items.append(
                    textwrap.fill(
                        text, width, initial_indent=marker or indent, subsequent_indent=indent
                    )
                )
                marker = ""
            else:
                blocks.append(textwrap.fill(text, width))
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
    return "\n\n".join(blocks)


def _inline_text(children: list[Token]) -> str:
    parts: list[str] = []
    link: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "link_open":
            link.append(str(child.attrs.get("href", "")))
        elif child.type == "link_close" and link:
            href = link.pop()
            parts.append(f" ({href})" if href and href not in "".join(parts[-1:]) else "")
        elif child.type == "image":
            parts.append(f"[{child.content}]")
    return "".join(parts)

"""A release's model card: its `README.md`, rendered from Markdown and sanitized (a card is written by
whoever published the checkpoint, so no script, style, form or event handler survives), cached per
revision since a revision's bytes never change."""

import markdown
import nh3

from distribution.revision_text import revision_text

CARD_PATH = "README.md"
MOST_BYTES = 512 * 1024  # a card larger than this is cut: it is a page, not a book
TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2",
    "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "summary", "sup",
    "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "td": {"align"}, "th": {"align"}}


def rendered(text: str) -> str:
    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"])
    return nh3.clean(
        html, tags=TAGS, attributes=ATTRIBUTES, url_schemes={"http", "https", "mailto"}, link_rel="nofollow noopener"
    )


def front_matter_removed(text: str) -> str:
    """Hub cards open with YAML metadata between `---` lines: data for tools, not for the page."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[end + 4 :].lstrip("\n")
    return text


def card_html(revision) -> str | None:
    """The sanitized HTML of `revision`'s README.md; None when it has none (or it cannot be read)."""
    return revision_text(
        revision, CARD_PATH, MOST_BYTES, made=lambda text: rendered(front_matter_removed(text)), kind="card-html"
    )

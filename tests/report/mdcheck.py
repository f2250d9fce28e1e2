"""Reading rendered reports the way GitHub does: a CommonMark parser with GFM tables, strikethrough
and autolinks (markdown-it-py's gfm-like preset, linkify on), and checks that untrusted text is inert."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from markdown_it import MarkdownIt
from markdown_it.token import Token

try:  # commonmark + table + strikethrough + linkify (bare URLs, www., e-mail); raw HTML allowed as on GitHub
    import linkify_it  # noqa: F401  (linkify-it-py: the gfm-like preset needs it)

    _MD = MarkdownIt("gfm-like")
except ImportError:  # without it, bare-URL autolinks are caught by test_safety's joined-text check only
    _MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])

ALLOWED_HTML_BLOCKS = (
    re.compile(r"<details><summary>[^<>]*</summary>\n?"),
    re.compile(r"</details>\n?"),
    re.compile(r"<!-- rlhf-canary:config=[\w.\-]* -->\n?"),
)
ALLOWED_FENCES = {"mermaid", "text"}
# A live mention: @ directly followed by a login character (GitHub's rule); a zero-width space breaks it.
MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")


def parse(text: str) -> list[Token]:
    return _MD.parse(text)


def walk(tokens: list[Token]):
    for t in tokens:
        yield t
        if t.children:
            yield from walk(t.children)


def inline_text(token: Token) -> str:
    """The visible text of an inline token (what a reader sees)."""
    out = []
    for t in token.children or []:
        if t.type in ("text", "text_special", "code_inline"):
            out.append(t.content)
        elif t.type in ("softbreak", "hardbreak"):
            out.append(" ")
    return "".join(out)


def visible_text(text: str) -> str:
    return "\n".join(inline_text(t) for t in parse(text) if t.type == "inline")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [r[i] for r in self.rows]


def tables(text: str) -> list[Table]:
    """Every GFM table: header cells and body rows as visible text."""
    found: list[Table] = []
    current: Table | None = None
    row: list[str] | None = None
    in_head = False
    for t in parse(text):
        if t.type == "table_open":
            current = Table([])
        elif t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            row = []
        elif t.type == "inline" and row is not None:
            row.append(inline_text(t).strip())
        elif t.type == "tr_close" and current is not None:
            if in_head:
                current.header = row
            else:
                current.rows.append(row)
            row = None
        elif t.type == "table_close":
            found.append(current)
            current = None
    return found


def headings(text: str) -> list[str]:
    toks = parse(text)
    return [inline_text(toks[i + 1]) for i, t in enumerate(toks) if t.type == "heading_open"]


def inertness_problems(text: str, *, links: set[str] = frozenset(), images: set[str] = frozenset()) -> list[str]:
    """Everything in `text` that untrusted input could have produced: raw HTML other than the report's
    own <details>/<summary>/marker, links and images other than the report's, code spans,
    strikethrough, unexpected fences, live @mentions."""
    problems = []
    for t in walk(parse(text)):
        if t.type == "html_block" and not any(p.fullmatch(t.content) for p in ALLOWED_HTML_BLOCKS):
            problems.append(f"html_block {t.content!r}")
        elif t.type == "html_inline":
            problems.append(f"html_inline {t.content!r}")
        elif t.type == "link_open" and t.attrGet("href") not in links:
            problems.append(f"link {t.attrGet('href')!r}")
        elif t.type == "image" and t.attrGet("src") not in images:
            problems.append(f"image {t.attrGet('src')!r}")
        elif t.type == "code_inline":
            problems.append(f"code span {t.content!r}")
        elif t.type == "s_open":
            problems.append("strikethrough")
        elif t.type == "fence" and t.info.strip() not in ALLOWED_FENCES:
            problems.append(f"fence {t.info!r}")
        elif t.type in ("text", "text_special") and MENTION.search(t.content):
            problems.append(f"mention in {t.content!r}")
        elif t.type == "html_block" and MENTION.search(t.content):
            problems.append(f"mention in {t.content!r}")
    return problems

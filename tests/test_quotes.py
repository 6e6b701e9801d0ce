"""Every quotation attributed to the lectures — in docs/*.md, README.md and the code's comments and
docstrings — is verbatim in the lecture files of ``../shared/reference/`` (skipped when absent).

What counts as a quotation attributed to the lectures:
- a markdown block quote (lines starting with ``>``), except its attribution line (``— ...``):
  its “curly-quoted” parts if it has any, else all of it;
- in a paragraph (markdown: lines up to a blank line; code: one comment block or string) that
  names the lectures (lecture, slide, transcript, reference/0..), every span in “curly” or
  "straight" double quotes of three words or more.

How a quotation is compared: whitespace, case, markdown emphasis, backslash escapes and the kind
of quote mark and apostrophe are normalised away; ``…``, ``...``, ``[...]``, ``[word]`` (an
editor's insertion) and `` · `` (between quoted bullets) mark elisions, and each piece between
them of two words or more must occur in one of the lecture files.
"""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
NAMES_THE_LECTURES = re.compile(r"lecture|slide|transcript|reference/0", re.IGNORECASE)
QUOTED = re.compile(r"“([^”]+)”|\"([^\"\n]+(?:\n[^\"\n]+){0,6})\"")
LITERAL_QUOTES = re.compile(r"^[A-Za-z]*(\'\'\'|\"\"\"|\'|\")|(\'\'\'|\"\"\"|\'|\")$")
ELISION = re.compile(r"\s*(?:…|\.\.\.|\[[^\]]*\]|\s·\s)\s*")


def normalise(text: str) -> str:
    """Lower case, one space between words; emphasis, escapes, quote marks and list markers dropped."""
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)(\{[^}]*\})?|<img [^>]*>", " ", text)  # the files' pictures
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"[*`\\$\"]", "", text)
    text = re.sub(r"(?m)^\s*(?:[-•>]|\d+\.)\s+", " ", text)  # bullets, numbered lists, block-quote marks
    text = re.sub(r"\s+", " ", text)
    return text.strip().lower()


def pieces(quote: str) -> list[str]:
    """The parts of a quotation between elisions that are long enough to check (two words or more)."""
    parts = [normalise(p).strip(" ,.;:!?\"'()") for p in ELISION.split(quote)]
    return [p for p in parts if len(p.split()) >= 2]


def paragraphs_of_markdown(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, text, is a block quote) for each paragraph of a markdown file."""
    out, block, start = [], [], 0
    for i, line in enumerate(text.splitlines() + [""], start=1):
        if line.strip() and not (block and line.startswith(">") != block[0].startswith(">")):
            if not block:
                start = i
            block.append(line)
            continue
        if block:
            out.append((start, "\n".join(block), block[0].startswith(">")))
        block = [line] if line.strip() else []
        start = i
    return out


def quotes_in_block_quote(text: str) -> list[str]:
    lines = [re.sub(r"^>\s?", "", line) for line in text.splitlines()]
    body = "\n".join(line for line in lines if not line.lstrip().startswith(("—", "-- ")))
    curly = re.findall(r"“([^”]+)”", body)
    return curly or [body]


def quotes_in_paragraph(text: str) -> list[str]:
    if not NAMES_THE_LECTURES.search(text):
        return []
    found = [a or b for a, b in QUOTED.findall(text)]
    return [q for q in found if len(q.split()) >= 3 and not re.fullmatch(r"[\w.\-/\s=,\[\]{}()']*_[\w.\-/\s=]*", q)]


def paragraphs_of_python(text: str) -> list[tuple[int, str]]:
    """(line, text) of each comment block and each string literal of a Python file."""
    out, comments, start = [], [], 0
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            if not comments:
                start = tok.start[0]
            comments.append(tok.string.lstrip("#").strip())
            continue
        if tok.type in (tokenize.NL, tokenize.NEWLINE) and comments:
            continue
        if comments:
            out.append((start, " ".join(comments)))
            comments = []
        if tok.type == tokenize.STRING:
            body = LITERAL_QUOTES.sub("", tok.string)  # the literal's own quote marks are no quotation
            for i, para in enumerate(re.split(r"\n\s*\n", body)):
                out.append((tok.start[0] + i, para))
    if comments:
        out.append((start, " ".join(comments)))
    return out


def attributed_quotes() -> list[tuple[str, str]]:
    """(where, quotation) for every quotation attributed to the lectures."""
    found = []
    for path in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for line, para, is_block_quote in paragraphs_of_markdown(path.read_text()):
            quotes = quotes_in_block_quote(para) if is_block_quote else quotes_in_paragraph(para)
            found += [(f"{path.relative_to(ROOT)}:{line}", q) for q in quotes]
    for path in sorted((ROOT / "trainlab").rglob("*.py")):
        for line, para in paragraphs_of_python(path.read_text()):
            found += [(f"{path.relative_to(ROOT)}:{line}", q) for q in quotes_in_paragraph(para)]
    return found


@pytest.fixture(scope="module")
def lectures() -> str:
    if not REFERENCE.is_dir() or not list(REFERENCE.glob("*.txt")):
        pytest.skip(f"the lecture files are not at {REFERENCE}")
    return " ".join(normalise(p.read_text()) for p in sorted(REFERENCE.glob("*.txt")))


def test_the_extractor_finds_quotations_and_their_pieces():
    assert pieces("“[ReLU] Converges much faster … (e.g. 6x)”") == ["converges much faster", "e.g. 6x"]
    assert quotes_in_paragraph('the lecture says "train for a couple iterations" here') == ["train for a couple iterations"]
    assert quotes_in_paragraph('no attribution: "three words here"') == []
    assert quotes_in_block_quote("> “a b c” · “d e f”\n>\n> — slides") == ["a b c", "d e f"]
    assert len(attributed_quotes()) > 50


def test_every_quotation_is_verbatim_in_the_lectures(lectures):
    missing = [f"{where}: {piece!r}  (from {quote[:70]!r})"
               for where, quote in attributed_quotes() for piece in pieces(quote) if piece not in lectures]
    assert not missing, "not in the lecture files:\n" + "\n".join(missing)

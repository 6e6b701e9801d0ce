"""The docs stay in step with the code: the README's configuration table is the schema's."""
from pathlib import Path

from trainlab.config import keys_table

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- config-keys:start -->", "<!-- config-keys:end -->"


def readme_table() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index(START) + len(START):text.index(END)].strip()


def test_readme_config_table_matches_schema():
    assert readme_table() == keys_table(), (
        "README's configuration table is out of date; regenerate it with:\n"
        "  python -c 'import tests.test_docs as t; t.write_readme_table()'")


def write_readme_table() -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{keys_table()}\n{END}{tail}")

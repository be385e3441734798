"""The docs say what the code does: the generated tables of numbers equal what the code gives now,
the training keys table lists the config schema, and every relative link resolves."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

from cnnzoo.config import Config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "configs" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _load_gen_tables():
    spec = importlib.util.spec_from_file_location("gen_tables", ROOT / "scripts" / "gen_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_tables = _load_gen_tables()


@pytest.mark.parametrize("name", list(gen_tables.TABLES))
def test_committed_table_is_what_the_code_gives(name):
    assert gen_tables.committed(name) == gen_tables.generated(name), (
        f"{gen_tables.TABLES[name][0]}: table {name} is stale; run python scripts/gen_tables.py"
    )


def test_check_names_a_stale_table_and_changes_nothing(monkeypatch, capsys):
    page = ROOT / "docs" / "zoo.md"
    before = page.read_text()
    monkeypatch.setitem(gen_tables.TABLES, "zoo-table", ("docs/zoo.md", lambda: "| a changed table |\n"))
    assert gen_tables.main(["--check", "zoo-table"]) == 1
    assert "docs/zoo.md: table zoo-table is stale" in capsys.readouterr().err
    assert page.read_text() == before


def test_write_replaces_only_the_table_between_its_markers(tmp_path):
    page = tmp_path / "docs" / "zoo.md"
    page.parent.mkdir()
    page.write_text("before\n<!-- begin: zoo-table -->\nold\n<!-- end: zoo-table -->\nafter\n")
    gen_tables.write("zoo-table", "| new |\n", root=tmp_path)
    assert page.read_text() == "before\n<!-- begin: zoo-table -->\n\n| new |\n\n<!-- end: zoo-table -->\nafter\n"
    assert gen_tables.committed("zoo-table", root=tmp_path) == "| new |\n"


def _yaml(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return "{}" if value == {} else str(value)


def _schema(cls, prefix: str = "") -> dict[str, str]:
    """Every key of the config schema, dotted, with its default as YAML writes it."""
    keys = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys |= _schema(type(default), f"{prefix}{f.name}.")
        else:
            keys[prefix + f.name] = _yaml(default)
    return keys


def test_training_keys_table_lists_every_config_key_with_its_default():
    text = (ROOT / "docs" / "training.md").read_text()
    table = text.split("| key | default | meaning |")[1].split("\n\n")[0].strip().splitlines()[1:]
    listed = {}
    for row in table:
        key, default = (cell.strip().strip("`") for cell in row.strip("|").split("|")[:2])
        listed[key] = default
    assert listed == _schema(Config)


def _without_code(text: str) -> str:
    """The markdown outside fenced code blocks and inline code, where links and headings are."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for heading in re.findall(
        r"^#+\s+(.*?)\s*$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M), flags=re.M
    ):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = 0
        while (candidate := slug if n == 0 else f"{slug}-{n}") in anchors:
            n += 1
        anchors.add(candidate)
    return anchors


def _links(page: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT)}")
        elif anchor and anchor not in _anchors(target):
            broken.append(f"{link}: no heading with anchor #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_sees_headings_and_links_as_github_does(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Padding: 'valid', 'same' and 'full'\n## CNNZOO_KERNELS and the build\n## Notes\n## Notes\n"
        "```\n# not a heading [not](a-link.md)\n```\nsee [this](other.md#x) and `[code](no.md)`\n"
    )
    assert _anchors(page) == {"padding-valid-same-and-full", "cnnzoo_kernels-and-the-build", "notes", "notes-1"}
    assert _links(page) == ["other.md#x"]

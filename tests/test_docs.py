"""The README and the docs/ pages: every relative link and image resolves to a file or folder of the checkout (an
#anchor to a heading of its page), every `python run_benchmark.py ...` and `python -m benchmark.perf ...` command
they show is one the command line accepts, and the README stays a front page of at most 200 lines.

Pages are rendered by Python-Markdown, so code is told apart from prose as a renderer does (fenced and indented
blocks, inline code). A command is checked with the parser the command line builds (`benchmark.cli.build_parser`,
`benchmark.perf.build_parser`), with abbreviated flags refused, and its suite and method names looked up; nothing is
run. Commands are shown as they are typed: a placeholder (PATH, NAME, <suite>, [--flag], ...) is a finding, so a
reader can paste every command as it stands.
"""
from __future__ import annotations

import argparse
import contextlib
import html.parser
import io
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import markdown
import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
PAGE_IDS = [str(page.relative_to(REPO)) for page in PAGES]
HEADINGS = {f"h{level}" for level in range(1, 7)}


class _RenderedPage(html.parser.HTMLParser):
    """The links (a href, img src), heading texts and code (inline or block) of one rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.headings: list[str] = []
        self.code: list[tuple[str, str]] = []          # ("inline" | "block", text)
        self._heading: list[str] | None = None
        self._code: list[str] | None = None
        self._in_pre = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "img" and attrs.get("src"):
            self.links.append(attrs["src"])
        elif tag in HEADINGS:
            self._heading = []
        elif tag == "pre":
            self._in_pre = True
        elif tag == "code":
            self._code = []

    def handle_endtag(self, tag):
        if tag in HEADINGS and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None
        elif tag == "pre":
            self._in_pre = False
        elif tag == "code" and self._code is not None:
            self.code.append(("block" if self._in_pre else "inline", "".join(self._code)))
            self._code = None

    def handle_data(self, data):
        for part in (self._heading, self._code):
            if part is not None:
                part.append(data)


def render(text: str) -> _RenderedPage:
    page = _RenderedPage()
    page.feed(markdown.markdown(text, extensions=["fenced_code", "tables"]))
    page.close()
    return page


def github_anchors(headings: list[str]) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens; a repeated
    heading gets -1, -2, ..."""
    anchors, seen = set(), {}
    for heading in headings:
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def link_problems(page: Path, text: str) -> list[str]:
    """Each relative link of the page whose file or folder is missing, or whose #anchor names no heading."""
    rendered, problems = render(text), []
    anchors_of: dict[Path, set[str]] = {}
    for link in rendered.links:
        parts = urlsplit(link)
        if parts.scheme or parts.netloc:                # http(s), mailto: not this test's concern
            continue
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
        if not target.exists():
            problems.append(f"{link}: no such file or folder ({target})")
            continue
        if parts.fragment and target.suffix == ".md":
            if target not in anchors_of:
                source = text if target == page.resolve() else target.read_text(encoding="utf-8")
                anchors_of[target] = github_anchors(render(source).headings)
            if parts.fragment not in anchors_of[target]:
                problems.append(f"{link}: no heading with anchor #{parts.fragment} in {target.name}")
    return problems


PROGRAMS = {("python", "run_benchmark.py"): "run_benchmark", ("python3", "run_benchmark.py"): "run_benchmark",
            ("python", "-m", "benchmark.perf"): "perf", ("python3", "-m", "benchmark.perf"): "perf"}
PLACEHOLDER = re.compile(r"^\.\.\.$|[<>\[\]]|^[A-Z][A-Z0-9_]*$")


def shown_commands(rendered: _RenderedPage) -> list[tuple[str, list[str], str]]:
    """(program, arguments, the command as shown) for every command of PROGRAMS in the page's code: lines of a
    block (backslash continuations joined), an inline span as one line; `&&`, `;` and `|` separate commands."""
    commands = []
    for kind, code in rendered.code:
        code = code.replace("\\\n", " ")
        for line in (code.splitlines() if kind == "block" else [" ".join(code.split())]):
            line = re.sub(r"(^|\s)#.*", "", line)       # a shell comment starts a word
            if not any(prefix[-1] in line for prefix in PROGRAMS):
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, ""
            try:
                tokens = list(lexer)
            except ValueError as error:                  # an unclosed quote
                commands.append(("shell", [str(error)], line))
                continue
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token.strip(";&|"):
                    segment.append(token)
                    continue
                for prefix, program in PROGRAMS.items():
                    if tuple(segment[:len(prefix)]) == prefix:
                        commands.append((program, segment[len(prefix):], shlex.join(segment)))
                segment = []
    return commands


def _without_abbreviations(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """argparse takes `--dry` for `--dry-run`; a page must show the full flag."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _without_abbreviations(subparser)
    return parser


def command_problem(program: str, arguments: list[str]) -> str | None:
    """Why the command line would refuse these arguments (None if it accepts them); parsing only, nothing runs."""
    from benchmark import cli, perf
    from benchmark.suites import SUITES
    from methods import method_names
    if program == "shell":
        return f"not a shell command ({arguments[0]})"
    placeholders = [token for token in arguments if PLACEHOLDER.search(token)]
    if placeholders:
        return f"placeholder(s) {placeholders}: show a command as it is typed"
    parser = _without_abbreviations(cli.build_parser() if program == "run_benchmark" else perf.build_parser())
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            parsed = parser.parse_args(arguments)
        except SystemExit:
            return errors.getvalue().strip().splitlines()[-1] if errors.getvalue().strip() else "exits at parsing"
    suite = getattr(parsed, "suite", None)
    if suite is not None and suite not in SUITES and not (REPO / suite).is_file():
        return f"no suite {suite!r} (neither a built-in suite nor a file of the checkout)"
    if program == "run_benchmark" and parsed.methods and not parsed.plugins:
        unknown = sorted(set(cli._flatten(parsed.methods)) - set(method_names()))
        if unknown:
            return f"no method(s) {unknown}"
    return None


def page_command_problems(text: str) -> list[str]:
    return [f"`{shown}`: {problem}" for program, arguments, shown in shown_commands(render(text))
            if (problem := command_problem(program, arguments))]


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_relative_link_resolves(page):
    assert link_problems(page, page.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_command_shown_is_one_the_command_line_accepts(page):
    assert page_command_problems(page.read_text(encoding="utf-8")) == []


def test_the_readme_is_a_front_page_of_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail to a docs/ page"


def test_the_checks_find_the_readme_s_commands_and_links():
    # Without this, an extractor that found nothing would pass every page.
    rendered = render(README.read_text(encoding="utf-8"))
    commands = shown_commands(rendered)
    assert ("run_benchmark", ["--suite", "quickstart"]) in [(program, args) for program, args, _ in commands]
    assert len(commands) >= 10
    assert {"docs/extending.md", "docs/protocol.md", "docs/methods.md"} <= set(rendered.links)


def test_a_broken_command_or_link_fails_the_checks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Some section\n")
    text = "\n".join([
        "# A page", "",
        "    python run_benchmark.py --suite quickstart --no-such-flag        # an unknown flag", "",
        "```bash",
        "python run_benchmark.py --suite quickstart --dry   # an abbreviation",
        "python run_benchmark.py --suite quickstart \\",
        "    --jobs two",
        "python -m benchmark.perf methods --arch no_such_backbone",
        "```", "",
        "Inline: `python run_benchmark.py --suite no_such_suite`, `python run_benchmark.py --methods nobody`,",
        "`python run_benchmark.py --pretrained PATH`, and a good one, `python run_benchmark.py --suite quickstart",
        "--report --figures`.", "",
        "[missing](no_such_file.md), [anchor](page.md#no-such-section), [fine](page.md#some-section), "
        "[web](https://example.org/nothing.md), ![image](img/none.png)",
    ])
    problems = page_command_problems(text)
    assert len(problems) == 7, problems
    for fragment in ("--no-such-flag", "--dry", "two", "no_such_backbone", "no_such_suite", "nobody", "PATH"):
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert not any("--figures" in problem for problem in problems)
    links = link_problems(tmp_path / "source.md", text)
    assert len(links) == 3, links
    assert any("no_such_file.md" in p for p in links) and any("#no-such-section" in p for p in links)
    assert any("img/none.png" in p for p in links)


def test_the_pages_say_that_plugins_and_suite_files_are_code():
    # `--plugin` files and a suite file's `plugins` are imported: Python run with the user's rights.
    for page in (README, REPO / "docs" / "extending.md"):
        text = " ".join(page.read_text(encoding="utf-8").split())
        assert "Python code run with your rights" in text and "conftest.py" in text, page

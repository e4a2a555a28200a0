"""A small lexer for the shell the legacy configs are written in: words with their quoting,
simple statements, and the blocks (loops, functions) that do not convert.

Not bashlex: bashlex 0.18 fails on 67 of the 901 configs as written (quoted `[[` operands,
arithmetic, heredocs in `$(...)`), and what matters here is what bash made of a value when it
read the config, which tools/legacy_measure.py checks against bash itself on every config."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from builder.recipes.legacy.variables import Skipped, Unconvertible


@dataclass(frozen=True)
class Word:
    """A shell word as segments: ("lit", text) from single quotes or escapes, ("dq", text)
    from double quotes, ("bare", text) unquoted. Expansions live in dq and bare segments."""

    parts: tuple[tuple[str, str], ...]
    raw: str

    @property
    def literal(self) -> str:
        return "".join(t for _, t in self.parts)


@dataclass(frozen=True)
class Statement:
    line: int
    words: tuple[Word, ...]
    raw: str


def _read_subst(text: str, i: int) -> int:
    """The index after a `$(...)` that starts at text[i] == '$'; quotes inside respected."""
    depth, i = 1, i + 2
    while i < len(text) and depth:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = text.index("'", i + 1) + 1 if "'" in text[i + 1 :] else len(text)
            continue
        if c == '"':
            i = _read_dq(text, i + 1)[1]
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
    if depth:
        raise Unconvertible("unterminated $(...)")
    return i


def _read_dq(text: str, i: int) -> tuple[str, int]:
    """Contents of a double-quoted string starting after its quote; (contents, index after)."""
    out = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '"\\`\n':
            out.append(text[i + 1] if text[i + 1] != "\n" else "")
            i += 2
            continue
        if c == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("\\$")  # marked: a literal dollar, not an expansion
            i += 2
            continue
        if c == "$" and text[i + 1 : i + 2] == "(":
            j = _read_subst(text, i)
            out.append(text[i:j])
            i = j
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise Unconvertible("unterminated double quote")


# `$(cat <<-END ... END\n)`: the configs' way to write a multi-line value.
_HEREDOC = re.compile(r"\$\(cat <<(-?)\s*(['\"]?)(\w+)\2[ \t]*\n(.*?)\n\t*\3[ \t]*\n\s*\)", re.S)


def _heredoc(m: re.Match[str]) -> tuple[str, str]:
    """The value of a `$(cat <<END ...)`: as in double quotes, but `"` is literal (a quoted
    END: nothing expands); `<<-` strips leading tabs; $(...) drops trailing newlines."""
    body = m[4]
    if m[1]:
        body = "\n".join(ln.lstrip("\t") for ln in body.split("\n"))
    if m[2]:
        return ("lit", body.rstrip("\n"))
    out, i = [], 0
    while i < len(body):
        c, nxt = body[i], body[i + 1 : i + 2]
        if c == "\\" and nxt in ("$", "`", "\\", "\n"):
            out.append({"$": "\\$", "\n": ""}.get(nxt, nxt))  # \$ stays marked: a dollar
            i += 2
            continue
        out.append(c)
        i += 1
    return ("dq", "".join(out).rstrip("\n"))


def statements(text: str) -> Iterator[Statement | Skipped]:
    """Split shell text into simple statements (words), yielding Skipped for what cannot be
    split faithfully. `;`, `&&` and newlines end statements; keywords are ordinary words."""
    i, line = 0, 1
    words: list[Word] = []
    parts: list[tuple[str, str]] = []
    start_i, start_line = 0, 1
    raw_start = 0

    def end_word() -> None:
        nonlocal parts, raw_start
        if parts:
            words.append(Word(tuple(parts), text[raw_start:i]))
        parts = []

    def end_statement() -> Statement | None:
        nonlocal words
        end_word()
        st = Statement(start_line, tuple(words), text[start_i:i].strip()) if words else None
        words = []
        return st

    while i < len(text):
        c = text[i]
        if not parts and not words:
            start_i, start_line = i, line
        if c == "#" and not parts:
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if c in " \t":
            end_word()
            i += 1
            continue
        if c in "\n;" or text.startswith("&&", i) or text.startswith("||", i) or c == "|":
            op = "&&" if text.startswith("&&", i) else "||" if text.startswith("||", i) else c
            if op in ("&&", "||") and words and words[0].literal in ("if", "elif"):
                end_word()  # part of the condition, which then does not convert
                words.append(Word((("bare", op),), op))
                i += 2
                continue
            if op in ("||", "|") and (words or parts):
                # A pipeline or an `||` fallback is shell logic: the whole line is skipped.
                end = text.find("\n", i)
                end = len(text) if end == -1 else end
                yield Skipped(start_line, text[start_i:end].strip(), "shell logic (| or ||)")
                words, parts = [], []
                line += text.count("\n", i, end)
                i = end
                continue
            st = end_statement()
            if st:
                yield st
            line += c == "\n"
            i += len(op)
            continue
        if not parts:
            raw_start = i
        try:
            if c == "\\":
                if text[i + 1 : i + 2] == "\n":
                    line += 1
                else:
                    parts.append(("lit", text[i + 1 : i + 2]))
                i += 2
            elif c == "'":
                j = text.find("'", i + 1)
                if j == -1:
                    raise Unconvertible("unterminated single quote")
                parts.append(("lit", text[i + 1 : j]))
                line += text.count("\n", i, j)
                i = j + 1
            elif c == '"':
                content, j = _read_dq(text, i + 1)
                parts.append(("dq", content))
                line += text.count("\n", i, j)
                i = j
            elif c == "$" and (hd := _HEREDOC.match(text, i)):
                parts.append(_heredoc(hd))
                line += text.count("\n", i, hd.end())
                i = hd.end()
            elif c == "$" and text[i + 1 : i + 2] == "(":
                j = _read_subst(text, i)
                parts.append(("bare", text[i:j]))
                line += text.count("\n", i, j)
                i = j
            else:
                j = i
                while (
                    j < len(text)
                    and text[j] not in " \t\n;|&'\"\\#"
                    and not (text[j] == "$" and text[j + 1 : j + 2] == "(")
                ):
                    if text.startswith("${", j):  # one word to its }, blanks and all
                        depth, j = 1, j + 2
                        while j < len(text) and depth:
                            depth += {"{": 1, "}": -1}.get(text[j], 0)
                            j += 1
                        continue
                    j += 1
                if j == i:  # a lone & (background) or similar
                    j = i + 1
                parts.append(("bare", text[i:j]))
                i = j
        except Unconvertible as exc:
            yield Skipped(start_line, text[start_i:].strip().splitlines()[0], str(exc))
            return
    st = end_statement()
    if st:
        yield st


_CLOSERS = {"for": "done", "while": "done", "until": "done", "case": "esac", "select": "done"}


def _block_closer(st: Statement) -> str | None:
    """The word that ends the block `st` opens (loops, case, functions), or None."""
    words = [w.literal for w in st.words]
    if words[0] in _CLOSERS:
        return _CLOSERS[words[0]]
    if (
        words[0] == "function"
        or re.fullmatch(r"[A-Za-z_][\w-]*(\(\))?", words[0])
        and (words[0].endswith("()") or words[1:2] == ["()"])
    ):
        return "}"
    return None


def _keywords_apart(items: Iterator[Statement | Skipped]) -> Iterator[Statement | Skipped]:
    """`then X=1` and `else X=1` on one line: the keyword, then the statement."""
    for st in items:
        keyword = isinstance(st, Statement) and st.words[0].literal in ("then", "else", "do")
        if keyword and len(st.words) > 1:
            yield Statement(st.line, st.words[:1], st.words[0].literal)
            yield Statement(st.line, st.words[1:], st.raw.split(None, 1)[1])
        else:
            yield st

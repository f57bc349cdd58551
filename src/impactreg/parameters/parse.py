"""The elastix parameter text syntax: ``(Key value value ...)`` entries, ``//`` comments,
double-quoted strings and bare numbers. Values are kept as strings, in order; a RawParameters is
an ordered ``dict[str, list[str]]``.
"""
from __future__ import annotations

import re

from ..errors import ParameterError

RawParameters = dict  # key -> its values as strings, in file order

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _strip_comment(line: str) -> str:
    in_quote = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote and line.startswith("//", i):
            return line[:i]
    return line


def _tokens(body: str, where: str) -> list[str]:
    tokens, i, n = [], 0, len(body)
    while i < n:
        ch = body[i]
        if ch.isspace():
            i += 1
        elif ch == '"':
            end = body.find('"', i + 1)
            if end < 0:
                raise ParameterError(f"{where}: unterminated quoted string; close it with \"")
            tokens.append(body[i + 1:end])
            i = end + 1
        else:
            j = i
            while j < n and not body[j].isspace() and body[j] != '"':
                j += 1
            tokens.append(body[i:j])
            i = j
    return tokens


def parse_parameter_text(text: str, source: str = "<text>") -> RawParameters:
    """Parse elastix parameter text. A key given twice is an error, as in elastix's parser."""
    result: RawParameters = {}
    first_line: dict[str, int] = {}
    pending, start_line = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line and not pending:
            continue
        if not pending:
            if not line.startswith("("):
                raise ParameterError(f"{source}:{number}: expected an entry like (Key value), got {line[:60]!r}")
            start_line = number
        pending = f"{pending} {line}" if pending else line
        if pending.count('"') % 2 == 0 and pending.rstrip().endswith(")"):
            where = f"{source}:{start_line}"
            body = pending.strip()[1:-1]
            if "(" in body or ")" in body.replace('"', ""):
                inner = re.sub(r'"[^"]*"', "", body)
                if "(" in inner or ")" in inner:
                    raise ParameterError(f"{where}: unbalanced parentheses; write one (Key value ...) entry per line")
            tokens = _tokens(body, where)
            if not tokens:
                raise ParameterError(f"{where}: empty entry (); give a key and its values")
            key, values = tokens[0], tokens[1:]
            if not _KEY.match(key):
                raise ParameterError(f"{where}: {key!r} is not a valid parameter name")
            if key in result:
                raise ParameterError(f"{where}: ({key} ...) is given a second time (first at line {first_line[key]}); "
                                     f"elastix refuses a repeated parameter: keep one")
            result[key] = values
            first_line[key] = start_line
            pending = ""
    if pending:
        raise ParameterError(f"{source}:{start_line}: entry is not closed with ')'")
    return result


def is_number(value: str) -> bool:
    return bool(_NUMBER.match(value))


def format_value(value) -> str:
    if isinstance(value, bool):
        return f'"{str(value).lower()}"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e16 else str(int(value))
    text = str(value)
    return text if is_number(text) else f'"{text}"'


def format_parameter_map(parameters: RawParameters, sections: dict[str, list[str]] | None = None) -> str:
    """elastix text: one (Key values) per line; ``sections`` groups keys under // headings."""
    lines, done = [], set()
    groups = [(None, [k for k in parameters if not sections or all(k not in ks for ks in sections.values())])]
    if sections:
        groups += list(sections.items())
    for heading, keys in groups:
        present = [k for k in keys if k in parameters and k not in done]
        if not present:
            continue
        if heading:
            lines.append(f"\n// {heading}")
        for key in present:
            values = parameters[key]
            if not isinstance(values, (list, tuple)):
                values = [values]
            lines.append(f"({key} {' '.join(format_value(v) for v in values)})".replace(" )", ")"))
            done.add(key)
    return "\n".join(lines).lstrip("\n") + "\n"

"""A strict reader for the part of TOML the project's configurations use.

Slicer 5.8 runs Python 3.9, which has no ``tomllib`` and does not bundle ``tomli``; this
reader lets training start from its console with the shipped configurations. It accepts
tables (``[a]``, ``[a.b]``), bare, quoted and dotted keys, basic and literal strings,
integers, floats (including ``inf`` and ``nan``), booleans, arrays (across lines, with
comments) and comments. Anything else (multi-line strings, inline tables, arrays of
tables, dates, hex numbers) is refused with the file and line, never guessed.
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Set, Tuple

from .errors import ConfigError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_DIGITS = r"[0-9](?:_?[0-9])*"
_NUMBER = re.compile(
    r"(?P<special>[+-]?(?:inf|nan))"
    rf"|(?P<number>[+-]?(?:0|[1-9](?:_?[0-9])*)(?P<fraction>\.{_DIGITS})?(?P<exponent>[eE][+-]?{_DIGITS})?)")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_VALUE_ENDS = " \t\r\n,]#"
_UNSUPPORTED_HINT = "not supported by the built-in TOML reader (install 'tomli' or use a JSON configuration)"


def loads(text: str, source: str = "<string>") -> Dict[str, Any]:
    """Parse TOML text into nested dicts; ``source`` names the file in error messages."""
    return _Reader(text, source).document()


class _Reader:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0

    # ------------------------------------------------------------------ helpers

    def fail(self, message: str) -> None:
        line = self.text.count("\n", 0, self.pos) + 1
        raise ConfigError(f"{self.source}:{line}: {message}")

    def peek(self, length: int = 1) -> str:
        return self.text[self.pos:self.pos + length]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_spaces(self) -> None:
        while self.peek() in (" ", "\t") and not self.at_end():
            self.pos += 1

    def skip_comment(self) -> None:
        if self.peek() != "#":
            return
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        comment = self.text[self.pos:end].rstrip("\r")
        if any(ord(c) < 32 and c != "\t" for c in comment):
            self.fail("control character in a comment")
        self.pos = end

    def _line_break(self) -> bool:
        """Spaces and a comment, then a line break (LF or CRLF) if there is one: True if so."""
        self.skip_spaces()
        self.skip_comment()
        for ending in ("\r\n", "\n"):
            if self.peek(len(ending)) == ending:
                self.pos += len(ending)
                return True
        return False

    def skip_blank(self) -> None:
        """Spaces, comments and line breaks (between statements and inside arrays)."""
        while not self.at_end() and self._line_break():
            pass

    def end_of_line(self) -> None:
        if not self._line_break() and not self.at_end():
            self.fail(f"unexpected text {self.rest_of_line()!r} (one key = value or [table] per line)")

    def rest_of_line(self) -> str:
        end = self.text.find("\n", self.pos)
        return self.text[self.pos:len(self.text) if end < 0 else end].rstrip("\r")

    # ------------------------------------------------------------------ document

    def document(self) -> Dict[str, Any]:
        root: Dict[str, Any] = {}
        current = root
        headers: Set[Tuple[str, ...]] = set()
        while True:
            self.skip_blank()
            if self.at_end():
                return root
            if self.peek(2) == "[[":
                self.fail(f"arrays of tables ([[...]]) are {_UNSUPPORTED_HINT}")
            if self.peek() == "[":
                self.pos += 1
                self.skip_spaces()
                path = self.key_path()
                self.skip_spaces()
                if self.peek() != "]":
                    self.fail("a table header must end with ']'")
                self.pos += 1
                if path in headers:
                    self.fail(f"table [{'.'.join(path)}] is defined twice")
                headers.add(path)
                current = self.table_at(root, path)
            else:
                path = self.key_path()
                self.skip_spaces()
                if self.peek() != "=":
                    self.fail(f"expected '=' after the key {'.'.join(path)!r}")
                self.pos += 1
                self.skip_spaces()
                value = self.value()
                target = self.table_at(current, path[:-1])
                if path[-1] in target:
                    self.fail(f"key {'.'.join(path)!r} is set twice")
                target[path[-1]] = value
            self.end_of_line()

    def table_at(self, table: Dict[str, Any], path: Tuple[str, ...]) -> Dict[str, Any]:
        for part in path:
            child = table.setdefault(part, {})
            if not isinstance(child, dict):
                self.fail(f"{part!r} is already a value, not a table")
            table = child
        return table

    def key_path(self) -> Tuple[str, ...]:
        parts: List[str] = [self.key()]
        while True:
            self.skip_spaces()
            if self.peek() != ".":
                return tuple(parts)
            self.pos += 1
            self.skip_spaces()
            parts.append(self.key())

    def key(self) -> str:
        if self.peek() == '"':
            return self.basic_string()
        if self.peek() == "'":
            return self.literal_string()
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            self.fail(f"expected a key, found {self.rest_of_line()!r}")
        self.pos = match.end()
        return match.group()

    # ------------------------------------------------------------------ values

    def value(self) -> Any:
        first = self.peek()
        if first == '"':
            return self.basic_string()
        if first == "'":
            return self.literal_string()
        if first == "[":
            return self.array()
        if first == "{":
            self.fail(f"inline tables ({{...}}) are {_UNSUPPORTED_HINT}")
        for word, meaning in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                self.value_ends(word)
                return meaning
        return self.number()

    def value_ends(self, token: str) -> None:
        if not self.at_end() and self.peek() not in _VALUE_ENDS:
            self.fail(f"cannot read the value {token + self.rest_of_line()!r} "
                      f"(dates, hex numbers and bare words are {_UNSUPPORTED_HINT})")

    def number(self) -> Any:
        match = _NUMBER.match(self.text, self.pos)
        if not match:
            self.fail(f"expected a value, found {self.rest_of_line()!r}")
        self.pos = match.end()
        self.value_ends(match.group())
        if match.group("special"):
            token = match.group("special")
            magnitude = math.inf if token.lstrip("+-") == "inf" else math.nan
            return -magnitude if token.startswith("-") else magnitude
        token = match.group("number").replace("_", "")
        if match.group("fraction") or match.group("exponent"):
            return float(token)
        return int(token)

    def array(self) -> List[Any]:
        opening = self.pos
        self.pos += 1  # '['
        items: List[Any] = []
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return items
            if self.at_end():
                self.pos = opening  # the line to fix is where the array starts
                self.fail("an array is not closed with ']'")
            items.append(self.value())
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1
            elif self.at_end():
                self.pos = opening
                self.fail("an array is not closed with ']'")
            elif self.peek() != "]":
                self.fail("array items must be separated by ','")

    def basic_string(self) -> str:
        if self.peek(3) == '"""':
            self.fail(f"multi-line strings are {_UNSUPPORTED_HINT}")
        self.pos += 1
        pieces: List[str] = []
        while True:
            char = self.peek()
            if self.at_end() or char == "\n":
                self.fail("a string is not closed with '\"' on its line")
            self.pos += 1
            if char == '"':
                return "".join(pieces)
            if char == "\\":
                pieces.append(self.escape())
            elif ord(char) < 32 and char != "\t" or char == "\x7f":
                self.fail("control character in a string (write it as an escape)")
            else:
                pieces.append(char)

    def escape(self) -> str:
        code = self.peek()
        self.pos += 1
        if code in _ESCAPES:
            return _ESCAPES[code]
        if code in ("u", "U"):
            width = 4 if code == "u" else 8
            digits = self.peek(width)
            if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                self.fail(f"\\{code} needs {width} hexadecimal digits")
            self.pos += width
            point = int(digits, 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                self.fail(f"\\{code}{digits} is not a Unicode scalar value")
            return chr(point)
        self.fail(f"unknown escape \\{code} in a string")
        return ""  # unreachable: fail raises

    def literal_string(self) -> str:
        if self.peek(3) == "'''":
            self.fail(f"multi-line strings are {_UNSUPPORTED_HINT}")
        end = self.text.find("'", self.pos + 1)
        newline = self.text.find("\n", self.pos + 1)
        if end < 0 or 0 <= newline < end:
            self.fail("a string is not closed with \"'\" on its line")
        value = self.text[self.pos + 1:end]
        if any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in value):
            self.fail("control character in a string")
        self.pos = end + 1
        return value

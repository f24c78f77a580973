"""One function that makes text from files safe to print on a terminal or in a log line.

Names, descriptions and domain names come from model files and registries that anyone can
write. Printed raw, an ANSI escape can recolour or clear the terminal, move the cursor or
retitle the window, a newline can forge a second log line, and a bidirectional override
can make a name read differently from what it is. Everything printed from such files goes
through :func:`printable`, which keeps ordinary text as is and shows every control or
invisible formatting character as a visible escape (``\\x1b``, ``\\n``, ``\\u202e``).
"""

from __future__ import annotations

import unicodedata

__all__ = ["printable", "has_control_characters"]

# Cc: C0/C1 controls and DEL; Cf: format characters (bidi overrides, zero-width joiners);
# Zl/Zp: the Unicode line and paragraph separators; Cs: lone surrogates.
_UNSAFE_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")


def _unsafe(character: str) -> bool:
    return unicodedata.category(character) in _UNSAFE_CATEGORIES


def _escape(character: str) -> str:
    code = ord(character)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(value: object) -> str:
    """``str(value)`` with every control and formatting character replaced by a visible
    escape, so the result prints as exactly what it is, on one line."""
    text = str(value)
    if not any(_unsafe(character) for character in text):
        return text
    return "".join(_escape(character) if _unsafe(character) else character for character in text)


def has_control_characters(text: str, allowed: str = "") -> bool:
    """Whether ``text`` holds a character :func:`printable` would escape (other than those in
    ``allowed``, e.g. newline and tab in free-text fields)."""
    return any(_unsafe(character) and character not in allowed for character in text)

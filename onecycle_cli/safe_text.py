"""Text from outside, made safe to print: `onecycle runs` under a runs root named `exp[lr=0.1]`.

Run names, paths, config values and error messages come from users, file systems and other
machines. Printed as they are, an ESC sequence clears the screen or retitles the window, a CR
overwrites the line being read, a BEL rings, a right-to-left override reverses what follows, and
rich reads `[/x]` as a closing tag (a crash) and `[lr=0.1]` as a style (silently gone). So every
string that reaches the terminal passes through `plain()`, and `Display` hands rich `Text`
objects, which it never parses as markup or emoji codes.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, the bidirectional overrides and isolates
# ("Trojan Source": text that displays in another order than it reads), and lone surrogates (the
# bytes of a file name that is not UTF-8, as Python's surrogateescape carries them)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the undecodable byte itself, as Python writes bytes
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: object) -> str:
    """`text` with every control character written out as its escape (ESC becomes `\\x1b`)."""
    return _UNSAFE.sub(_escaped, str(text))


def one_line(text: object) -> str:
    """`plain(text)` on a single line: runs of whitespace, newlines included, become one space."""
    return plain(" ".join(str(text).split()))


def printable(text: str) -> str:
    """A path (or a message naming one) as text that JSON, terminals and logs take: bytes that are not
    UTF-8, which the file system may hand over, shown as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

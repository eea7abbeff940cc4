"""The formula guard's rule: which text cells a spreadsheet would evaluate as formulas."""

from __future__ import annotations

# A cell a spreadsheet would evaluate starts with = + - @ TAB CR or LF, or has = + - @
# after leading white space or invisible characters (an import may trim or drop them:
# "  =1+1").
FORMULA_START = "=+-@\t\r\n"
FORMULA_AFTER_SPACE = "=+-@"
# What an import may trim or a reader may not show before a formula: Unicode's white space
# (U+0085 included) and the BOM; the information separators U+001C-U+001F (Python's
# str.strip() takes them as white space); the Mongolian vowel separator (white space in
# older Unicode); the zero-width space, non-joiner and joiner, and the word joiner. TAB,
# LF and CR already trigger the guard as a first character, but count before one that does.
LEADING_INVISIBLE = (
    "\t\n\v\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
    "\x1c\x1d\x1e\x1f\u180e\u200b\u200c\u200d\u2060"
)


def guard(text: str) -> str:
    """`text` as a CSV cell: prefixed with ' when a spreadsheet would evaluate it (the rule
    the exports' COPY applies in SQL, for cells written from Python)."""
    if text and (
        text[0] in FORMULA_START or text.lstrip(LEADING_INVISIBLE)[:1] in tuple(FORMULA_AFTER_SPACE)
    ):
        return "'" + text
    return text

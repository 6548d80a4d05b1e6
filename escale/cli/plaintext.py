"""reStructuredText inline markup turned into plain text, for ``--help``.

Command descriptions are often the module's docstring, written in
reStructuredText for the documentation. A terminal shows them as they are, so
:func:`plain_text` takes the markup out: ````code```` becomes ``'code'``,
``*emphasis*`` and ``**strong**`` lose their stars, ``:role:`target``` keeps
its target (``~a.b.c`` becomes ``c``), ```text`_`` and ```text``` keep their
text, and a paragraph ending in ``::`` ends in ``:``. Stars and backquotes
that are not markup (``*.txt``, a lone ``*``) are left alone.
"""

from __future__ import annotations

import re

_LITERAL = re.compile(r"``([^`\n](?:[^`]|`(?!`))*?)``")
_ROLE = re.compile(r":[A-Za-z][\w.+-]*:`~?([^`]+?)`")
_REFERENCE = re.compile(r"`([^`]+?)`__?")
_INTERPRETED = re.compile(r"`([^`]+?)`")
_STRONG = re.compile(r"(?<![\w*])\*\*(?=\S)(.+?)(?<=\S)\*\*(?![\w*])")
_EMPHASIS = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_LITERAL_BLOCK = re.compile(r"(?m)(\S)::$")
_BARE_LITERAL_BLOCK = re.compile(r"(?m)^[ \t]*::[ \t]*\n")


def _role_target(match: re.Match[str]) -> str:
    target = match[1]
    shown = re.match(r"(.+?)\s*<[^>]+>$", target)  # :doc:`text <target>`
    if shown:
        return shown[1]
    return target.rpartition(".")[2] if match[0].count("~") else target


def plain_text(text: str) -> str:
    """``text`` without reStructuredText inline markup (see the module docstring)."""
    text = _LITERAL.sub(lambda m: f"'{m[1]}'", text)
    text = _ROLE.sub(_role_target, text)
    text = _REFERENCE.sub(lambda m: m[1], text)
    text = _INTERPRETED.sub(lambda m: m[1], text)
    text = _STRONG.sub(lambda m: m[1], text)
    text = _EMPHASIS.sub(lambda m: m[1], text)
    text = _BARE_LITERAL_BLOCK.sub("", text)
    return _LITERAL_BLOCK.sub(r"\1:", text)

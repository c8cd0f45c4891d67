"""Burned-in text labels: a tiny built-in 5x7 bitmap font rasterised with numpy.

A built-in font keeps the pixels identical on every machine (no font files, no FreeType),
which matters for objects that must look the same wherever the node runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

_Pixel = TypeVar("_Pixel", bound=np.generic)

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
CHAR_GAP = 1
LINE_GAP = 2
PADDING = 2

# Rows top to bottom, '#' = ink. Only what labels need: upper case, digits, a little punctuation.
_GLYPH_ROWS: dict[str, str] = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "D": "####. #...# #...# #...# #...# #...# ####.",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "F": "##### #.... #.... ####. #.... #.... #....",
    "G": ".###. #...# #.... #.### #...# #...# .####",
    "H": "#...# #...# #...# ##### #...# #...# #...#",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "J": "..### ...#. ...#. ...#. ...#. #..#. .##..",
    "K": "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "M": "#...# ##.## #.#.# #.#.# #...# #...# #...#",
    "N": "#...# #...# ##..# #.#.# #..## #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "Q": ".###. #...# #...# #...# #.#.# #..#. .##.#",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "V": "#...# #...# #...# #...# #...# .#.#. ..#..",
    "W": "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
    "X": "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
    "Y": "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
    "Z": "##### ....# ...#. ..#.. .#... #.... #####",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    " ": "..... ..... ..... ..... ..... ..... .....",
    "-": "..... ..... ..... ##### ..... ..... .....",
    ".": "..... ..... ..... ..... ..... .##.. .##..",
    ",": "..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#.",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
    "/": "..... ....# ...#. ..#.. .#... #.... .....",
    "%": "##..# ##..# ...#. ..#.. .#... #..## #..##",
    "_": "..... ..... ..... ..... ..... ..... #####",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
    "=": "..... ..... ##### ..... ##### ..... .....",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#..",
    "'": "..#.. ..#.. ..... ..... ..... ..... .....",
}
# Typographic dashes fall back to the hyphen glyph; anything else unknown renders as '?'.
_ALIASES = {"\u2013": "-", "\u2014": "-", "\u2212": "-"}


def _parse(rows: str) -> npt.NDArray[np.bool_]:
    glyph = np.array([[c == "#" for c in row] for row in rows.split()], dtype=bool)
    if glyph.shape != (GLYPH_HEIGHT, GLYPH_WIDTH):
        raise ValueError(f"malformed glyph: {rows!r}")
    return glyph


_GLYPHS: dict[str, npt.NDArray[np.bool_]] = {ch: _parse(rows) for ch, rows in _GLYPH_ROWS.items()}


def glyph(char: str) -> npt.NDArray[np.bool_]:
    """The 7x5 ink mask of one character (case-insensitive; unknown characters give '?')."""
    key = _ALIASES.get(char, char.upper())
    return _GLYPHS.get(key, _GLYPHS["?"])


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of one rendered line."""
    if not text:
        return 0
    return (len(text) * (GLYPH_WIDTH + CHAR_GAP) - CHAR_GAP) * scale


def render_line(text: str, scale: int = 1) -> npt.NDArray[np.bool_]:
    """One line of text as a boolean ink mask of shape (7*scale, width)."""
    if scale < 1:
        raise ValueError("scale must be >= 1")
    mask = np.zeros((GLYPH_HEIGHT, max(text_width(text), 0)), dtype=bool)
    for i, char in enumerate(text):
        x = i * (GLYPH_WIDTH + CHAR_GAP)
        mask[:, x : x + GLYPH_WIDTH] = glyph(char)
    return np.kron(mask, np.ones((scale, scale), dtype=bool)).astype(bool)


def wrap(text: str, max_chars: int) -> list[str]:
    """Greedy word wrap; words longer than a line are split."""
    if max_chars < 1:
        raise ValueError("the image is too narrow for any text")
    lines: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:max_chars])
            word = word[max_chars:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= max_chars:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def label_scale(columns: int) -> int:
    """Glyph scale for an image width: 1 up to 255 columns, 2 for 512, and so on."""
    return max(1, columns // 256)


def text_block(lines: Sequence[str], max_width: int, scale: int = 1) -> npt.NDArray[np.bool_]:
    """Ink mask of several lines, each wrapped to fit `max_width` pixels (padding included)."""
    max_chars = (max_width - 2 * PADDING * scale + CHAR_GAP * scale) // ((GLYPH_WIDTH + CHAR_GAP) * scale)
    wrapped = [part for line in lines for part in wrap(line, max_chars)]
    if not wrapped:
        return np.zeros((0, 0), dtype=bool)
    width = max(text_width(line, scale) for line in wrapped) + 2 * PADDING * scale
    line_height = (GLYPH_HEIGHT + LINE_GAP) * scale
    height = len(wrapped) * line_height - LINE_GAP * scale + 2 * PADDING * scale
    block = np.zeros((height, width), dtype=bool)
    for i, line in enumerate(wrapped):
        ink = render_line(line, scale)
        y = PADDING * scale + i * line_height
        x = PADDING * scale
        block[y : y + ink.shape[0], x : x + ink.shape[1]] = ink
    return block


def burn_in(
    image: npt.NDArray[_Pixel],
    lines: Sequence[str],
    *,
    foreground: float | Sequence[float],
    background: float | Sequence[float],
    corner: str = "top-left",
    margin: int = 1,
) -> npt.NDArray[_Pixel]:
    """A copy of `image` (rows x cols, or rows x cols x samples) with `lines` burned in.

    The text sits on an opaque background box so it stays legible over any anatomy.
    `corner` is "top-left" or "bottom-left". Raises ValueError when the text cannot fit,
    since a label that is silently cut off would defeat its purpose.
    """
    if corner not in ("top-left", "bottom-left"):
        raise ValueError(f"unknown corner {corner!r}")
    rows, columns = image.shape[:2]
    scale = label_scale(columns)
    block = text_block(lines, columns - 2 * margin, scale)
    out = image.copy()
    if block.size == 0:
        return out
    height, width = block.shape
    if height + 2 * margin > rows:
        raise ValueError(f"label of {height} rows does not fit an image of {rows} rows")
    top = margin if corner == "top-left" else rows - margin - height
    region = out[top : top + height, margin : margin + width]
    region[...] = np.asarray(background, dtype=out.dtype)
    region[block] = np.asarray(foreground, dtype=out.dtype)
    logger.debug("burned %d line(s) into a %dx%d image at %s", len(lines), rows, columns, corner)
    return out

"""TeX's 8-bit text encodings, for fonts whose PDF does not say which character each code draws.

A PDF font tells a reader its characters through a ToUnicode map, an /Encoding, or the glyph names
of its embedded font program. Older TeX PDFs (dvips, early pdfTeX) often give none of these that
pypdf can read: it falls back to Adobe's StandardEncoding, which has no characters at TeX's ligature
codes (0x0B-0x0F: ff fi fl ffi ffl in OT1) and other ones at its quotes and dashes (0x22 ", 0x5C \\,
0x7B {, 0x7C |, where OT1 has ” “ – —). Such fonts still name themselves: Computer Modern (CMR10,
CMBX12, CMTI10, ...) is set in OT1, its typewriter faces in OT1's typewriter variant, and the EC and
cm-super fonts (ECRM1000, SFRM1000, ...) in T1. For those fonts `install_tex_maps` gives the font
dictionary, in memory only, the ToUnicode map of its encoding before pypdf reads the page.
"""

from __future__ import annotations

import importlib.util
import re

# OT1 (Knuth's Computer Modern text fonts; `fontenc` OT1): codes that differ from ASCII.
_OT1_LOW = "ΓΔΘΛΞΠΣΥΦΨΩ" + "\ufb00\ufb01\ufb02\ufb03\ufb04" + "ıȷ`´ˇ˘¯˚¸ßæœøÆŒØ"  # 0x00-0x1F
OT1: dict[int, str] = {
    **dict(enumerate(_OT1_LOW)),
    0x20: "",  # the stroke of Ł and ł, drawn over the letter
    **{c: chr(c) for c in range(0x21, 0x7F)},
    0x22: "”", 0x27: "’", 0x3C: "¡", 0x3E: "¿", 0x5C: "“", 0x5E: "ˆ", 0x5F: "˙", 0x60: "‘",
    0x7B: "–", 0x7C: "—", 0x7D: "˝", 0x7E: "˜", 0x7F: "¨",
}
# The italic faces draw a pound sign where the upright ones have the dollar.
OT1_ITALIC: dict[int, str] = {**OT1, 0x24: "£"}
# OT1's typewriter variant (cmtt): no ligatures; ASCII where the text fonts have quotes and dashes.
OT1_TT: dict[int, str] = {
    **OT1,
    0x0B: "↑", 0x0C: "↓", 0x0D: "'", 0x0E: "¡", 0x0F: "¿", 0x20: "␣",
    0x22: '"', 0x3C: "<", 0x3E: ">", 0x5C: "\\", 0x5E: "^", 0x5F: "_", 0x7B: "{", 0x7C: "|", 0x7D: "}",
    0x7E: "~",
}
# T1 (Cork; the EC and cm-super fonts): accents, quotes and dashes low, ligatures at 0x1B-0x1F,
# accented Latin letters high.
_T1_LOW = "`´ˆ˜¨˝˚ˇ˘¯˙¸˛‚‹›“”„«»–—" + "\u200b" + "0ıȷ" + "\ufb00\ufb01\ufb02\ufb03\ufb04"  # 0x00-0x1F
_T1_HIGH = ("ĂĄĆČĎĚĘĞĹĽŁŃŇŊŐŔŘŚŠŞŤŢŰŮŸŹŽŻĲİđ§"  # 0x80-0x9F
            "ăąćčďěęğĺľłńňŋőŕřśšşťţűůÿźžżĳ¡¿£"  # 0xA0-0xBF
            "ÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖŒØÙÚÛÜÝÞ" + "SS"  # 0xC0-0xDF (0xDF: the capital of ß, two letters)
            + "àáâãäåæçèéêëìíîïðñòóôõöœøùúûüýþß")  # 0xE0-0xFF
T1: dict[int, str] = {
    **dict(enumerate(_T1_LOW)),
    0x20: "␣",
    **{c: chr(c) for c in range(0x21, 0x7F)},
    0x27: "’", 0x60: "‘", 0x7F: "-",  # 0x7F: the hyphen TeX uses at line ends
    **dict(zip(range(0x80, 0xDF), _T1_HIGH[:0x5F], strict=True)),
    0xDF: "SS",
    **dict(zip(range(0xE0, 0x100), _T1_HIGH[0x61:], strict=True)),
}

OT1_TEXT = re.compile(r"^(CMR|CMBX|CMB\d|CMSL|CMBXSL|CMSS|CMSSBX|CMSSDC|CMSSQ|CMCSC|CMDUNH|CMFIB|CMFF|"
                      r"CMVTT)", re.IGNORECASE)
OT1_ITALIC_TEXT = re.compile(r"^(CMTI|CMBXTI|CMSSI|CMFI|CMU?TI|CMSSBXTI)", re.IGNORECASE)
OT1_TYPEWRITER = re.compile(r"^(CMTT|CMSLTT|CMITT|CMTEX|CMSLTEX)", re.IGNORECASE)
T1_TEXT = re.compile(r"^(EC[A-Z]{2}\d|SF[A-Z]{2}\d)", re.IGNORECASE)


def tex_encoding(base_font: str) -> dict[int, str] | None:
    """The TeX encoding a font is set in, from its base name ("ABCDEF+CMR10" -> OT1), or None."""
    name = base_font.lstrip("/").split("+", 1)[-1]
    if OT1_TYPEWRITER.match(name):
        return OT1_TT
    if OT1_ITALIC_TEXT.match(name):
        return OT1_ITALIC
    if OT1_TEXT.match(name):
        return OT1
    if T1_TEXT.match(name):
        return T1
    return None


def pypdf_reads_its_encoding(font) -> bool:
    """Whether the font dictionary tells pypdf its characters: a ToUnicode map, an /Encoding, or an
    embedded font program whose built-in encoding pypdf reads (Type 1 `dup` lines, or CFF through
    fontTools)."""
    if "/ToUnicode" in font or "/Encoding" in font:
        return True
    descriptor = font.get("/FontDescriptor")
    descriptor = descriptor.get_object() if descriptor is not None else None
    if not descriptor:
        return False
    program = descriptor.get("/FontFile")
    if program is not None:
        try:
            clear = program.get_object().get_data().split(b"eexec", 1)[0]
        except Exception:  # noqa: BLE001 - a damaged font program: pypdf will not read it either
            return False
        return b"/Encoding" in clear and re.search(rb"(?m)^dup\s+\d+\s*/", clear) is not None
    program = descriptor.get("/FontFile3")
    if program is not None and program.get_object().get("/Subtype") == "/Type1C":
        return importlib.util.find_spec("fontTools") is not None
    return False


def to_unicode_cmap(encoding: dict[int, str]) -> bytes:
    """A ToUnicode CMap (one-byte codes) for an encoding table."""
    entries = [(code, text) for code, text in sorted(encoding.items()) if text]
    body = [b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap",
            b"/CMapName /arxsum-tex def /CMapType 2 def",
            b"1 begincodespacerange <00> <FF> endcodespacerange"]
    for start in range(0, len(entries), 100):
        chunk = entries[start:start + 100]
        body.append(f"{len(chunk)} beginbfchar".encode())
        body += [f"<{code:02X}> <{text.encode('utf-16-be').hex().upper()}>".encode() for code, text in chunk]
        body.append(b"endbfchar")
    body.append(b"endcmap CMapName currentdict /CMap defineresource pop end end")
    return b"\n".join(body)


_CMAPS: dict[int, bytes] = {}


def install_tex_maps(page) -> int:
    """Give each TeX-encoded font of the page (and of its forms) that pypdf cannot decode a
    ToUnicode map of its encoding, in memory. Returns how many fonts were given one."""
    from pypdf.generic import NameObject, StreamObject

    installed = 0
    for font in _fonts(page.get("/Resources"), set()):
        if font.get("/Subtype") not in ("/Type1", "/MMType1", "/TrueType"):
            continue
        encoding = tex_encoding(str(font.get("/BaseFont", "")))
        if encoding is None or pypdf_reads_its_encoding(font):
            continue
        stream = StreamObject()
        stream.set_data(_CMAPS.setdefault(id(encoding), to_unicode_cmap(encoding)))
        font[NameObject("/ToUnicode")] = stream
        installed += 1
    return installed


def _fonts(resources, seen: set[int]):
    """The font dictionaries of a resource dictionary and of the form XObjects it holds."""
    resources = resources.get_object() if resources is not None else None
    if not hasattr(resources, "get") or id(resources) in seen:
        return
    seen.add(id(resources))
    fonts = resources.get("/Font")
    fonts = fonts.get_object() if fonts is not None else None
    if hasattr(fonts, "values"):
        for ref in fonts.values():
            font = ref.get_object()
            if hasattr(font, "get"):
                yield font
    xobjects = resources.get("/XObject")
    xobjects = xobjects.get_object() if xobjects is not None else None
    if hasattr(xobjects, "values"):
        for ref in xobjects.values():
            xobject = ref.get_object()
            if hasattr(xobject, "get") and xobject.get("/Subtype") == "/Form":
                yield from _fonts(xobject.get("/Resources"), seen)

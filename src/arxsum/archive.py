"""Archives of LaTeX sources (arXiv e-prints, authors' zips) -> their files, in memory.

An e-print is anybody's upload, so an archive is read as untrusted: nothing is written to disk,
the unpacked bytes and the member count are capped (one clear error past either, the zip or gzip
bomb case), members with absolute or `..` names are not read, links, devices and other special
members are ignored, and macOS resource forks (`__MACOSX/`, `._*`) are skipped.

Formats: tar (plain, gzip, bzip2, xz), zip, and a single gzipped file (arXiv serves one-file
sources as a gzipped `.tex` without a tar around it).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field

from arxsum.errors import InputError, describe

MAX_UNPACKED_BYTES = 256 * 2**20  # arXiv caps a submission at 50 MB compressed; sources are far smaller
MAX_MEMBERS = 10_000
KEEP_SUFFIXES_SKIPPED = (".pdf", ".png", ".jpg", ".jpeg", ".gif", ".eps", ".ps", ".tif", ".tiff", ".svg",
                         ".zip", ".gz", ".tgz", ".tar", ".mp4", ".mov", ".h5", ".npy", ".pkl")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip", ".tar.bz2", ".tar.xz", ".tex.gz")
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"


@dataclass
class Unpacked:
    """An archive's regular files (posix names relative to its root) and what was left out."""

    files: dict[str, bytes] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)  # reason -> members


def is_archive(data: bytes, name: str = "") -> bool:
    """Archive bytes by their magic number (or a tar's `ustar` header)."""
    head = data[:10]
    if head.startswith(GZIP_MAGIC) or head[:4] in ZIP_MAGIC or head.startswith(XZ_MAGIC):
        return True
    if head.startswith(BZIP2_MAGIC) and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return True
    return data[257:262] == b"ustar"


def unpack(data: bytes, name: str, *, max_bytes: int | None = None, max_members: int | None = None) -> Unpacked:
    """Every regular file of the archive `data` (named `name`), in memory; InputError when unreadable
    or past the caps (default MAX_UNPACKED_BYTES, MAX_MEMBERS). Binary files (figures, nested
    archives) are counted but their bytes not kept."""
    limits = _Limits(MAX_UNPACKED_BYTES if max_bytes is None else max_bytes,
                     MAX_MEMBERS if max_members is None else max_members)
    try:
        if data[:4] in ZIP_MAGIC:
            return _unpack_zip(data, limits)
        if data[257:262] == b"ustar":
            return _unpack_tar(io.BytesIO(data), limits)
        stream = _decompressor(data)
        try:
            found = _unpack_tar(_Capped(stream, limits), limits)
            if found.files or found.dropped or not data.startswith(GZIP_MAGIC):
                return found
        except tarfile.ReadError:
            if not data.startswith(GZIP_MAGIC):
                raise
        limits = _Limits(limits.max_bytes, limits.max_members)
        # one gzipped file: its name from the gzip header, else the archive's without .gz
        stream = _Capped(gzip.GzipFile(fileobj=io.BytesIO(data)), limits)
        content = stream.read()
        out = Unpacked()
        out.files[_gzip_member_name(data, name)] = content
        return out
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, gzip.BadGzipFile, EOFError, OSError,
            lzma.LZMAError, ValueError) as e:
        raise InputError(f"damaged or unreadable archive ({describe(e)})") from None


class _Limits:
    def __init__(self, max_bytes: int, max_members: int) -> None:
        self.max_bytes, self.max_members = max_bytes, max_members
        self.bytes = 0
        self.members = 0

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise InputError(f"archive unpacks to more than {self.max_bytes // 2**20} MiB: not read "
                             "(a decompression bomb?)")

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.max_members:
            raise InputError(f"archive holds more than {self.max_members} files: not read")


class _Capped(io.RawIOBase):
    """A decompressing stream that fails once more than the cap has come out of it."""

    def __init__(self, stream, limits: _Limits) -> None:
        self.stream, self.limits = stream, limits

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            chunks = []
            while chunk := self.read(1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        chunk = self.stream.read(min(n, 1 << 20))
        self.limits.add_bytes(len(chunk))
        return chunk

    def readinto(self, buffer) -> int:
        chunk = self.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def _decompressor(data: bytes):
    if data.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=io.BytesIO(data))
    if data.startswith(BZIP2_MAGIC):
        return bz2.BZ2File(io.BytesIO(data))
    if data.startswith(XZ_MAGIC):
        return lzma.LZMAFile(io.BytesIO(data))
    raise InputError("not an archive (tar, gzip, bzip2, xz or zip)")


def safe_member_name(name: str) -> str | None:
    """`name` as a clean relative posix path, or None when it is absolute or climbs out with `..`."""
    name = name.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def is_junk(name: str) -> bool:
    """macOS resource forks and Finder files, which the authors' zips often carry."""
    parts = name.split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith("._") or parts[-1] == ".DS_Store"


def _keep_bytes(name: str) -> bool:
    return not name.lower().endswith(KEEP_SUFFIXES_SKIPPED)


def _add(out: Unpacked, raw_name: str, read, size: int, limits: _Limits, *, count_size: bool) -> None:
    """Keep one member. `count_size`: its declared size counts towards the cap when its bytes are
    not read (zip); a tar's bytes pass through the capped stream either way."""
    name = safe_member_name(raw_name)
    if name is None:
        out.dropped["archive members with unsafe names (absolute or ..), not read"] += 1
        return
    if is_junk(name):
        out.dropped["macOS resource-fork members skipped"] += 1
        return
    if not _keep_bytes(name):
        if count_size:
            limits.add_bytes(size)
        out.files.setdefault(name, b"")  # present (for \includegraphics), bytes not needed
        return
    out.files[name] = read()


def _unpack_tar(fileobj, limits: _Limits) -> Unpacked:
    out = Unpacked()
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            limits.add_member()
            if not member.isreg():
                if not member.isdir():
                    out.dropped["archive links and special files ignored"] += 1
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            _add(out, member.name, handle.read, member.size, limits, count_size=False)
    return out


def _unpack_zip(data: bytes, limits: _Limits) -> Unpacked:
    out = Unpacked()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:  # the central directory says so before anything is read
            limits.members = limits.max_members
            limits.add_member()
        for info in infos:
            limits.add_member()
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # links, devices (no type bits: a file)
                out.dropped["archive links and special files ignored"] += 1
                continue

            def read(info=info) -> bytes:
                with zf.open(info) as member:
                    return _Capped(member, limits).read()

            _add(out, info.filename, read, info.file_size, limits, count_size=True)
    return out


def _gzip_member_name(data: bytes, name: str) -> str:
    """The original file name a gzip header records (FNAME), else `name` without .gz."""
    if len(data) > 10 and data[3] & 0x08:  # FNAME flag
        start = 10
        if data[3] & 0x04:  # FEXTRA
            start += 2 + int.from_bytes(data[10:12], "little")
        end = data.find(b"\x00", start)
        if end > start:
            original = safe_member_name(data[start:end].decode("latin-1"))
            if original:
                return posixpath.basename(original)
    base = posixpath.basename(name.replace("\\", "/")) or "main"
    return base[:-3] if base.lower().endswith(".gz") else base


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200]

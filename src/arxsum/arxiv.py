"""arXiv ids and URLs -> the paper's LaTeX source or PDF bytes, downloaded once into a cache.

`fetch_source` gets `/e-print/ID`: a gzipped tar, a gzipped single `.tex`, or the PDF itself for
PDF-only submissions; `fetch_pdf` gets `/pdf/ID`. Which one a run reads is the client's `source`
preference (`--source auto|latex|pdf`); `arxsum.sources.Extractor` applies it.

arXiv asks scripts for a User-Agent and at most one request every 3 seconds
(https://info.arxiv.org/help/api/tou.html); `ArxivClient` keeps both. The base URL, cache folder
and delay come from the environment so tests can point it at a local HTTP server.
"""

from __future__ import annotations

import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from arxsum.errors import InputError, OptionsError

DEFAULT_BASE_URL = "https://arxiv.org"
DEFAULT_DELAY_S = 3.0  # arXiv's terms of use: no more than one request every 3 seconds
SOURCE_CHOICES = ("auto", "latex", "pdf")  # auto: the LaTeX source when there is one, else the PDF
USER_AGENT = "arxsum/0.1 (+https://github.com/arxsum; paper summarizer)"

_NEW_ID = r"\d{4}\.\d{4,5}(?:v\d+)?"  # 2210.15497, 2210.15497v2 (since 2007)
_OLD_ID = r"[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?"  # math/0211159, math.AG/0211159v1
_ID = rf"(?:{_NEW_ID}|{_OLD_ID})"
_BARE = re.compile(rf"^(?:arxiv:)?({_ID})$", re.IGNORECASE)
_URL_PATH = re.compile(rf"^/(?:abs|pdf)/({_ID})(?:\.pdf)?/?$")


def base_url() -> str:
    return os.environ.get("ARXSUM_ARXIV_URL", DEFAULT_BASE_URL).rstrip("/")


def default_cache_dir() -> Path:
    if "ARXSUM_CACHE_DIR" in os.environ:
        return Path(os.environ["ARXSUM_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "arxsum"


def default_delay() -> float:
    return float(os.environ.get("ARXSUM_ARXIV_DELAY", DEFAULT_DELAY_S))


def parse_arxiv_id(text: str) -> str | None:
    """The arXiv id named by `text` (bare id, `arXiv:` id, or an abs/pdf URL), else None.

    The old-style archive keeps its case (`math/0211159`); the `arXiv:` prefix is dropped.
    """
    text = text.strip()
    m = _BARE.match(text)
    if m is None and "://" in text:
        url = urllib.parse.urlparse(text)
        hosts = {"arxiv.org", "www.arxiv.org", "export.arxiv.org", urllib.parse.urlparse(base_url()).netloc}
        m = _URL_PATH.match(url.path) if url.netloc.lower() in hosts else None
    if m is None:
        return None
    arxiv_id = m.group(1)
    number = re.match(r"(\d{4})\.(\d+)", arxiv_id)
    if number and len(number.group(2)) == 4 and number.group(1) >= "1501":
        return None  # since 2015 new ids have 5 digits after the dot
    return arxiv_id


def cache_name(arxiv_id: str) -> str:
    """A flat file-name stem for an id: `math/0211159` -> `math_0211159`."""
    return arxiv_id.replace("/", "_")


class ArxivClient:
    """Fetch PDFs by id, each at most once (cache), at most one request every `delay` seconds."""

    def __init__(self, *, base: str | None = None, cache_dir: Path | None = None,
                 delay: float | None = None, timeout: float = 60.0, source: str = "auto") -> None:
        if source not in SOURCE_CHOICES:
            raise OptionsError(f"--source must be one of {', '.join(SOURCE_CHOICES)}, got {source!r}")
        self.source = source
        self.base = (base or base_url()).rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.delay = default_delay() if delay is None else delay
        self.timeout = timeout
        self._lock = threading.Lock()  # one request at a time, spaced by `delay`
        self._last_request = float("-inf")
        self.requests = 0  # how many HTTP requests went out (tests look at it)

    def cached_path(self, arxiv_id: str) -> Path:
        return self.cache_dir / f"{cache_name(arxiv_id)}.pdf"

    def fetch_pdf(self, arxiv_id: str) -> bytes:
        path = self.cached_path(arxiv_id)
        if path.is_file():
            return path.read_bytes()
        data = self._download(f"{self.base}/pdf/{arxiv_id}", arxiv_id)
        if not data.lstrip().startswith(b"%PDF-"):
            raise InputError(f"arXiv did not return a PDF for {arxiv_id} (not yet rendered, or withdrawn?)")
        self._store(path, data)
        return data

    def cached_source_path(self, arxiv_id: str) -> Path:
        return self.cache_dir / f"{cache_name(arxiv_id)}.e-print"

    def fetch_source(self, arxiv_id: str) -> bytes:
        """The paper's e-print as arXiv serves it (gzipped tar or .tex, or a PDF), cached beside the PDFs;
        a PDF is also cached as the PDF, so a PDF-only paper costs one request."""
        path = self.cached_source_path(arxiv_id)
        if path.is_file():
            return path.read_bytes()
        data = self._download(f"{self.base}/e-print/{arxiv_id}", arxiv_id)
        if not data.strip():
            raise InputError(f"arXiv returned an empty source for {arxiv_id}")
        self._store(path, data)
        if data.lstrip().startswith(b"%PDF-"):
            self._store(self.cached_path(arxiv_id), data)
        return data

    def _download(self, url: str, arxiv_id: str) -> bytes:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with self._lock:
            wait = self._last_request + self.delay - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.requests += 1
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return response.read()
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    raise InputError(f"arXiv has no paper {arxiv_id} (404 at {url})") from None
                raise InputError(f"arXiv download of {arxiv_id} failed: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise InputError(f"cannot reach arXiv for {arxiv_id} ({reason}); offline?") from None
            finally:
                self._last_request = time.monotonic()

    def _store(self, path: Path, data: bytes) -> None:
        """Write to a temp file, then rename: the cache never holds half a PDF."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache costs a re-download next time, not this paper

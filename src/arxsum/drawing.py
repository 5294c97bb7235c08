"""A page's drawing operations -> the regions its figures cover.

Plots and diagrams that TeX draws itself (TikZ, pgfplots, PSTricks, EPS flattened by dvips and
ps2pdf) are no form XObject: their paths and their labels sit in the page's own content stream,
between the paragraphs. pypdf reports every operator of that stream to `visitor_operand_before`
with the current transformation matrix; `Drawing` follows the page's own operators (not those
inside form XObjects, whose text is known to be a graphic's already) and keeps each painted path
and image as a `Mark` in page space. (A form's /BBox is no measure of its graphic: some PDF tools
give every form the whole page's box.) `figure_regions` joins marks that touch into
clusters and keeps the clusters made of what plots and diagrams are made of: curves, short or
slanted strokes (ticks, arrows, markers), many small shapes, or an image. Rules and frames alone
(tables, footnote rules, fraction bars, boxed equations, framed theorems, algorithm boxes,
colored boxes behind text) never make a figure.
"""

from __future__ import annotations

from dataclasses import dataclass

# points: a horizontal or vertical stroke at least this long is a rule or a frame's side, not a tick
# (pgfplots' ticks are 4.25 pt; a table's vertical rules come a row, 10-12 pt, at a time)
LONG = 6.0
THIN = 2.0  # points: a rectangle this thin is a rule
TOUCH = 3.0  # points: marks this close belong to one drawing
FIGURE_DETAILS = 12  # details that make a cluster a figure: a rounded frame has 4, a plot's ticks alone ~10
MIN_IMAGE = 400.0  # square points: smaller images are icons and inline symbols (an ORCID logo, an emoji)
PAINT = frozenset({b"S", b"s", b"f", b"F", b"f*", b"B", b"B*", b"b", b"b*"})


@dataclass
class Mark:
    """A painted path or an image, in page space (points, origin bottom-left)."""

    x0: float
    y0: float
    x1: float
    y1: float
    details: int = 0  # curve pieces, short or slanted strokes, small shapes
    image: bool = False

    def touches(self, other: Mark, gap: float = TOUCH) -> bool:
        return (self.x0 - gap <= other.x1 and other.x0 - gap <= self.x1
                and self.y0 - gap <= other.y1 and other.y0 - gap <= self.y1)

    def take(self, other: Mark) -> None:
        self.x0, self.y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        self.x1, self.y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        self.details += other.details
        self.image = self.image or other.image

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def holds(self, x: float, y: float, margin: float = 0.0) -> bool:
        return self.x0 - margin <= x <= self.x1 + margin and self.y0 - margin <= y <= self.y1 + margin


class Drawing:
    """Collects the marks of one content stream's own operators (call `before` for each)."""

    def __init__(self, xobjects=None) -> None:
        self.xobjects = xobjects  # the page's /XObject resources, to find its images
        self.marks: list[Mark] = []
        self._box: list[float] | None = None  # the current path's page-space bounds
        self._details = 0
        self._point = (0.0, 0.0)  # current point, user space
        self._start = (0.0, 0.0)  # the current subpath's start
        self._cm = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)

    def before(self, operator: bytes, operands, cm) -> None:
        """One operator of the stream, before pypdf runs it (`cm`: the current matrix)."""
        handler = _HANDLERS.get(operator)
        if handler is not None:
            handler(self, operands, cm)

    def _path(self, operator: bytes, operands, cm) -> None:
        try:
            nums = [float(v) for v in operands]
        except (TypeError, ValueError):
            return
        if self._box is None:
            self._cm = tuple(float(v) for v in cm)
        _PATH_OPS[operator](self, nums)

    def _discard(self, *_) -> None:
        self._box = None  # a clipping path, or nothing: not painted
        self._details = 0

    # --- path construction (user space; bounds kept in page space) ---

    def _to_page(self, x: float, y: float) -> tuple[float, float]:
        a, b, c, d, e, f = self._cm
        return a * x + c * y + e, b * x + d * y + f

    def _extend(self, x: float, y: float) -> None:
        px, py = self._to_page(x, y)
        if self._box is None:
            self._box = [px, py, px, py]
        else:
            box = self._box
            box[0], box[1] = min(box[0], px), min(box[1], py)
            box[2], box[3] = max(box[2], px), max(box[3], py)

    def _segment(self, x: float, y: float, closing: bool = False) -> None:
        """A straight piece from the current point: a detail unless long, horizontal or vertical."""
        a, b, c, d, _, _ = self._cm
        dx, dy = x - self._point[0], y - self._point[1]
        px, py = a * dx + c * dy, b * dx + d * dy
        if closing and abs(px) < 0.01 and abs(py) < 0.01:
            return
        straight = (abs(px) < 0.5 or abs(py) < 0.5) and max(abs(px), abs(py)) >= LONG
        if not straight:
            self._details += 1
        self._extend(x, y)
        self._point = (x, y)

    def _m(self, v: list[float]) -> None:
        if len(v) >= 2:
            self._point = self._start = (v[0], v[1])
            self._extend(v[0], v[1])

    def _l(self, v: list[float]) -> None:
        if len(v) >= 2:
            self._segment(v[0], v[1])

    def _curve(self, v: list[float]) -> None:
        if len(v) >= 4:
            for i in range(0, len(v) - 1, 2):
                self._extend(v[i], v[i + 1])
            self._point = (v[-2], v[-1])
            self._details += 1

    def _h(self, v: list[float]) -> None:
        self._segment(*self._start, closing=True)

    def _re(self, v: list[float]) -> None:
        if len(v) < 4:
            return
        x, y, w, h = v[:4]
        for cx, cy in ((x, y), (x + w, y), (x, y + h), (x + w, y + h)):
            self._extend(cx, cy)
        a, b, c, d, _, _ = self._cm
        wide, high = abs(a * w) + abs(c * h), abs(b * w) + abs(d * h)
        if min(wide, high) <= THIN:
            self._details += max(wide, high) < LONG  # a rule, or a dot
        elif min(wide, high) < LONG:
            self._details += 1  # a marker, a legend's swatch, a narrow bar
        self._point = self._start = (x, y)

    def _paint(self, *_) -> None:
        if self._box is not None:
            self.marks.append(Mark(*self._box, details=self._details))
        self._box = None
        self._details = 0

    # --- images ---

    def _xobject(self, operands, cm) -> None:
        try:
            subtype = self.xobjects[operands[0]].get_object().get("/Subtype")
        except (KeyError, TypeError, AttributeError, IndexError):
            return
        if subtype == "/Image":
            self._unit_square(cm)

    def _inline_image(self, operands, cm) -> None:
        self._unit_square(cm)

    def _unit_square(self, cm) -> None:
        """An image: the unit square under the current matrix."""
        self._cm = tuple(float(v) for v in cm)
        corners = [self._to_page(x, y) for x, y in ((0, 0), (1, 0), (0, 1), (1, 1))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        self.marks.append(Mark(min(xs), min(ys), max(xs), max(ys), image=True))


_PATH_OPS = {b"m": Drawing._m, b"l": Drawing._l, b"c": Drawing._curve, b"v": Drawing._curve,
             b"y": Drawing._curve, b"h": Drawing._h, b"re": Drawing._re}
_HANDLERS = {
    **{op: lambda self, operands, cm, op=op: self._path(op, operands, cm) for op in _PATH_OPS},
    **dict.fromkeys(PAINT, Drawing._paint),
    b"n": Drawing._discard,
    b"Do": Drawing._xobject,
    b"INLINE IMAGE": Drawing._inline_image,
}


def figure_regions(marks: list[Mark]) -> list[Mark]:
    """Clusters of touching marks that are figures: enough details (curves, ticks, markers), or an
    image of some size. (A page's background or frame is told apart by the
    prose it holds, in `pdftext`; its size cannot tell it from a page-sized plot or a standalone
    figure's cropped page.)"""
    clusters: list[Mark] = []
    for mark in marks:
        if mark.image and mark.area < MIN_IMAGE:
            continue
        joined = Mark(mark.x0, mark.y0, mark.x1, mark.y1, mark.details, mark.image)
        rest = []
        for cluster in clusters:
            if cluster.touches(joined):
                joined.take(cluster)
            else:
                rest.append(cluster)
        clusters = [*rest, joined]
    clusters = _merged(clusters)
    return [c for c in clusters if c.image or c.details >= FIGURE_DETAILS]


def _merged(clusters: list[Mark]) -> list[Mark]:
    """Clusters that grew into each other while marks were added, joined until none touch."""
    changed = True
    while changed:
        changed = False
        out: list[Mark] = []
        for cluster in clusters:
            for other in out:
                if other.touches(cluster):
                    other.take(cluster)
                    changed = True
                    break
            else:
                out.append(cluster)
        clusters = out
    return clusters

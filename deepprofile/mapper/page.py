"""Standalone, offline HTML page of one mapper graph (kmapper's visualiser).

The page is kmapper's ``KeplerMapper.visualize`` output, post-processed:

- kmapper's template loads d3 6.1.1 and FileSaver from CDNs, a font from a font
  CDN and a favicon from an image host. The two scripts are replaced by inlined
  copies shipped in ``deepprofile/report/static/`` (d3 6.1.1 ``dist/d3.min.js``,
  BSD-3-Clause, and file-saver 2.0.2 ``dist/FileSaver.min.js``, MIT; licence files
  beside them); the font and favicon links are dropped. A page that still
  references a network resource needed to render raises instead of being written.
- Each node's detail pane gets its label histogram, mean confidence, accuracy and
  a few member images as inline ``data:image/png;base64`` thumbnails, then the
  member list.
- Colour functions: label (a node takes its majority label), lens, confidence
  and correctness (a node shows its mean), as far as the result holds them, plus any
  ``extra_colours`` (concepts: the node's share of concept-positive members).

Everything comes from a :class:`~deepprofile.mapper.graph.MapperGraphResult`,
so a page can be rebuilt from ``results/mapper.json`` without recomputing.
"""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepprofile.errors import DeepProfileError
from deepprofile.mapper.stats import sparse_cover_warning
from deepprofile.report.images import data_uri, downsample, png_bytes

_GRAPH_MARKER = "const graph = "
_SCRIPT_SRC = re.compile(
    r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?P<url>[^\"'\s>]+)[\"']?[^>]*>\s*</script\s*>",
    re.IGNORECASE,
)
_LINK = re.compile(r"<link\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"\bhref\s*=\s*[\"']?(?P<url>[^\"'\s>]+)", re.IGNORECASE)
_NETWORK = re.compile(r"^(?:https?:)?//", re.IGNORECASE)


STATIC_DIR = Path(__file__).resolve().parent.parent / "report" / "static"


def _static_text(name: str) -> str:
    path = STATIC_DIR / name
    if not path.exists():
        raise DeepProfileError(f"{path} is missing from the installed package; reinstall it.")
    return path.read_text("utf-8")


def _inline_script(code: str) -> str:
    if re.search(r"</script", code, re.IGNORECASE):  # would end the element early
        code = re.sub(r"</script", r"<\\/script", code, flags=re.IGNORECASE)
    return f"<script>{code}</script>"


def external_resources(page: str) -> list[str]:
    """Network URLs the page would fetch to render: ``<script src>``, ``<link href>``,
    ``<img src>``, CSS ``@import`` and ``url(...)``. Empty for an offline page."""
    found: list[str] = []
    found += [m["url"] for m in _SCRIPT_SRC.finditer(page) if _NETWORK.match(m["url"])]
    found += [
        m["url"] for m in re.finditer(r"<script\b[^>]*\bsrc\s*=\s*[\"']?(?P<url>[^\"'\s>]+)",
                                      page, re.IGNORECASE)
        if _NETWORK.match(m["url"]) and m["url"] not in found
    ]
    for link in _LINK.finditer(page):
        href = _HREF.search(link.group(0))
        if href and _NETWORK.match(href["url"]):
            found.append(href["url"])
    found += re.findall(r"<img\b[^>]*\bsrc\s*=\s*[\"']?((?:https?:)?//[^\"'\s>]+)", page,
                        re.IGNORECASE)
    found += re.findall(r"@import\s+(?:url\()?\s*[\"']?((?:https?:)?//[^\"')\s;]+)", page,
                        re.IGNORECASE)
    found += re.findall(r"url\(\s*[\"']?((?:https?:)?//[^\"')\s]+)", page, re.IGNORECASE)
    return sorted(set(found))


def make_offline(page: str) -> str:
    """Inline d3 and FileSaver in place of kmapper's CDN scripts; drop network links."""
    def script(match: re.Match[str]) -> str:
        url = match["url"]
        if not _NETWORK.match(url):
            return match.group(0)
        name = url.rsplit("/", 1)[-1].lower()
        if "d3" in url.lower() and name.startswith("d3"):
            return _inline_script(_static_text("d3.min.js"))
        if "filesaver" in name or "file-saver" in url.lower():
            return _inline_script(_static_text("FileSaver.min.js"))
        return match.group(0)  # unknown: left for external_resources() to report

    page = _SCRIPT_SRC.sub(script, page)

    def link(match: re.Match[str]) -> str:
        href = _HREF.search(match.group(0))
        return "" if href and _NETWORK.match(href["url"]) else match.group(0)

    page = _LINK.sub(link, page)
    left = external_resources(page)
    if left:
        raise DeepProfileError(
            "The mapper page still needs network resources after inlining "
            f"({', '.join(left)}); kmapper's template changed. Please report this."
        )
    return page


# --------------------------------------------------------------------------------------
# thumbnails
# --------------------------------------------------------------------------------------
THUMB_SIDE = 64
"""Largest side, in pixels, of a thumbnail: larger images are averaged down (a 224-pixel
image costs about a twelfth as much)."""


def to_uint8_image(image: Any) -> np.ndarray:
    """A (C, H, W), (H, W, C) or (H, W) image (any range) as (H, W) or (H, W, 3) uint8,
    min-max scaled per image."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):  # channels first, as torch stores them
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3:  # grey, RGB, or first three channels of anything else
        arr = arr[..., 0] if arr.shape[-1] < 3 else arr[..., :3]
    if arr.ndim not in (2, 3):
        raise DeepProfileError(f"Cannot make a thumbnail of an array of shape {arr.shape}.")
    lo, hi = np.nanmin(arr), np.nanmax(arr)
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return np.ascontiguousarray(np.round(np.nan_to_num(arr) * 255).astype(np.uint8))


def png_data_uri(image: Any, max_side: int | None = None) -> str:
    """``data:image/png;base64,...`` of an image array or tensor; with ``max_side`` it is
    first averaged down in ``k x k`` blocks until no side exceeds it."""
    img = to_uint8_image(image)
    if max_side is not None and max(img.shape[:2]) > max_side:
        chans = img[..., None] if img.ndim == 2 else img
        small = np.stack([downsample(chans[..., c], max_side) for c in range(chans.shape[2])],
                         axis=-1)
        img = np.round(small).astype(np.uint8)
        img = img[..., 0] if chans.shape[2] == 1 else img
    return data_uri(png_bytes(img))


def thumbnails_from_dataset(
    dataset: Any, rows: Sequence[int], indices: Any = None, max_side: int = THUMB_SIDE
) -> dict[int, str]:
    """Data URIs for store ``rows`` (each image once, at most ``max_side`` pixels a side);
    ``indices[row]`` is the dataset index of a row (``store.indices``), identity when
    ``None``. ``dataset[i]`` returns an image or an ``(image, label)`` pair."""
    out: dict[int, str] = {}
    for row in sorted({int(r) for r in rows}):
        idx = int(indices[row]) if indices is not None else row
        item = dataset[idx]
        image = item[0] if isinstance(item, (tuple, list)) else item
        out[row] = png_data_uri(image, max_side)
    return out


# --------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html_lib.escape(str(value), quote=True)


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return str(class_names[label])
    return str(label)


def _thumb_class(row: int) -> str:
    return f"dp-t{int(row)}"


def _thumb_rows(result: Any, thumbs: Mapping[int, str], max_thumbnails: int) -> list[int]:
    """Store rows whose thumbnails some node panel shows (each listed once)."""
    samples = result.point_sample
    rows: dict[int, None] = {}
    for node in result.nodes:
        seen: list[int] = []
        for p in node.representatives:
            row = int(samples[p]) if samples is not None else int(p)
            if row in thumbs and row not in seen:
                seen.append(row)
            if len(seen) >= max_thumbnails:
                break
        rows.update(dict.fromkeys(seen))
    return list(rows)


def _thumb_style(rows: Sequence[int], thumbs: Mapping[int, str]) -> str:
    """One CSS rule per thumbnail: panels refer to an image by class, so an image shown in
    several nodes is embedded once."""
    rules = [".dp-t{display:inline-block;width:48px;height:48px;margin:1px;"
             "border:1px solid #ccc;background:#000 no-repeat center/contain;"
             "image-rendering:pixelated;vertical-align:top}"]
    for row in rows:
        uri = thumbs[row]
        if not uri.startswith("data:image/png;base64,") or re.search(r"[^A-Za-z0-9+/=:;,]",
                                                                    uri[5:]):
            raise DeepProfileError(f"Thumbnail of row {row} is not a base64 PNG data URI.")
        rules.append(f".{_thumb_class(row)}{{background-image:url({uri})}}")
    return "<style>" + "\n".join(rules) + "</style>"


def _node_panel(
    node: Any, result: Any, thumbs: Mapping[int, str], max_thumbnails: int
) -> list[str]:
    names = result.class_names
    parts = []
    total = max(node.size, 1)
    rows = []
    for label, count in sorted(node.label_hist.items(), key=lambda kv: (-kv[1], kv[0])):
        width = round(120 * count / total)
        rows.append(
            f"<tr><td>{_esc(_class_name(label, names))}</td><td><div style='background:#4c78a8;"
            f"height:9px;width:{width}px'></div></td><td>{count}</td></tr>"
        )
    facts = [f"size {node.size}"]
    if node.purity is not None:
        facts.append(f"purity {node.purity:.2f}")
    if node.mean_confidence is not None:
        facts.append(f"mean confidence {node.mean_confidence:.3f}")
    if node.accuracy is not None:
        facts.append(f"accuracy {node.accuracy:.3f}")
    block = f"<div class='dp-node-facts'><b>{_esc(node.id)}</b>: {_esc(', '.join(facts))}</div>"
    if rows:
        block += (
            "<div class='dp-hist'><h3>Labels</h3><table style='font-size:12px'>"
            + "".join(rows) + "</table></div>"
        )
    parts.append(f"<div style='display:block;width:100%'>{block}</div>")
    samples = result.point_sample
    shown: list[tuple[int, int]] = []  # (store row, point), nearest the node mean first
    for p in node.representatives:  # already ordered by distance to the node mean
        row = int(samples[p]) if samples is not None else int(p)
        if row in thumbs and all(row != r for r, _ in shown):  # one image per store row
            shown.append((row, int(p)))
        if len(shown) >= max_thumbnails:
            break
    if shown:
        imgs = []
        for rank, (row, p) in enumerate(shown, 1):
            label = "" if result.labels is None else _class_name(int(result.labels[p]), names)
            imgs.append(f"<span class='dp-t {_thumb_class(row)}' role='img' "
                        f"title='{rank}. #{row} {_esc(label)}' "
                        f"aria-label='member {rank}: #{row} {_esc(label)}'></span>")
        parts.append(
            "<div class='dp-thumbs' style='display:block;width:100%'><h3>Members nearest the "
            f"node mean (closest first, {len(shown)} of {node.size})</h3>" + "".join(imgs)
            + "</div>"
        )
    for p in node.members:
        row = int(samples[p]) if samples is not None else int(p)
        tag = f"#{row}" if samples is None else f"#{row}.{p}"
        if result.labels is not None:
            tag += f" ({_esc(_class_name(int(result.labels[p]), names))})"
        parts.append(tag)
    return parts


def _colour_values(result: Any, extra: Mapping[str, Any] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    cols, names = [], []
    if result.labels is not None:
        cols.append(np.asarray(result.labels, dtype=np.float64))
        names.append("label (node: majority)")
    lens = np.asarray(result.lens, dtype=np.float64)
    for d in range(lens.shape[1]):
        cols.append(lens[:, d])
        suffix = f" [{d}]" if lens.shape[1] > 1 else ""
        names.append(f"lens {result.params.get('lens', '')}{suffix}")
    if result.confidence is not None:
        cols.append(np.asarray(result.confidence, dtype=np.float64))
        names.append("confidence")
    if result.labels is not None and result.predictions is not None:
        cols.append((np.asarray(result.predictions) == np.asarray(result.labels)).astype(float))
        names.append("correct")
    n = len(lens)
    for name, values in (extra or {}).items():
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(values) != n:
            raise DeepProfileError(
                f"Colour {name!r} has {len(values)} values but the graph of {result.layer!r} "
                f"has {n} points; give one value per point (see point_sample)."
            )
        cols.append(values)
        names.append(str(name))
    return np.column_stack(cols), names


def cover_warning(result: Any) -> str | None:
    """The sparse-cover warning of a graph (see
    :func:`~deepprofile.mapper.stats.sparse_cover_warning`), from its stored lens and
    parameters; ``None`` when the cover suits the data or the parameters are unknown."""
    params = result.params
    if params.get("intervals") is None or params.get("overlap") is None:
        return None
    return sparse_cover_warning(np.asarray(result.lens), int(params["intervals"]),
                                float(params["overlap"]), int(params.get("min_samples") or 5))


def _insert_before(page: str, tag: str, text: str) -> str:
    at = page.lower().rfind(tag)
    if at < 0:
        raise DeepProfileError(f"kmapper's page has no {tag}; its template changed.")
    return page[:at] + text + page[at:]


# kmapper 2.x's tooltip table has columns Lens, Mean, Max, Min but its script fills them in
# the order name, mean, min, max: every node showed "Max" < "Mean" < "Min".
_PROJECTION_ORDER = "let column_order = ['name', 'mean', 'min', 'max'];"


def _fix_projection_columns(page: str) -> str:
    """Fill kmapper's projection-statistics table in its header's order (Mean, Max, Min)."""
    return page.replace(_PROJECTION_ORDER, "let column_order = ['name', 'mean', 'max', 'min'];")


def _legend(result: Any, colours: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """What each colour function means: classes with their colours for the label
    function, right/wrong for correctness, else the value range the scale spans (kmapper
    scales each function to [0, 1] over the points; a node shows its members' mean)."""
    out: list[dict[str, Any]] = []
    for j, name in enumerate(names):
        col = colours[:, j]
        lo, hi = float(np.min(col)), float(np.max(col))
        entry: dict[str, Any] = {"name": name, "min": lo, "max": hi}
        if name.startswith("label") and result.labels is not None:
            values = sorted({int(v) for v in np.asarray(result.labels)})
            entry["items"] = [[_class_name(v, result.class_names),
                               (v - lo) / (hi - lo) if hi > lo else 0.0] for v in values]
            entry["note"] = "node: majority label"
        elif name == "correct":
            entry["items"] = ([["wrong", 0.0], ["right", 1.0]] if hi > lo else
                              [["all right" if lo == 1 else "all wrong", 0.0]])
            entry["note"] = "node: share of right predictions"
        else:
            entry["note"] = "node: mean of its members"
        out.append(entry)
    return out


_LEGEND_STYLE = """<style>
#dp-legend{position:fixed;left:50%;bottom:8px;transform:translateX(-50%);z-index:20;
background:rgba(255,255,255,.93);border:1px solid #bbb;border-radius:5px;padding:4px 10px;
font:12px/1.4 system-ui,sans-serif;color:#222;max-width:70vw}
#dp-legend .dp-sw{display:inline-block;width:11px;height:11px;margin:0 3px 0 8px;
vertical-align:-1px;border:1px solid #888}
#dp-legend .dp-bar{display:inline-block;width:160px;height:10px;margin:0 6px;
vertical-align:-1px;border:1px solid #888}
</style>"""

# Runs after kmapper's script: ``color`` (its d3 scale) and ``colorscale`` are globals there.
_LEGEND_SCRIPT = """(function () {
  var legend = __LEGEND__;
  var box = document.createElement("div");
  box.id = "dp-legend";
  document.body.appendChild(box);
  function fmt(v) { return Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-2)
    ? v.toExponential(2) : (+v.toFixed(3)).toString(); }
  function draw(i) {
    var entry = legend[i] || legend[0];
    box.textContent = "";
    var title = document.createElement("b");
    title.textContent = "Colour: " + entry.name;
    box.appendChild(title);
    if (entry.items) {
      entry.items.forEach(function (item) {
        var sw = document.createElement("span");
        sw.className = "dp-sw";
        sw.style.background = color(item[1]);
        box.appendChild(sw);
        box.appendChild(document.createTextNode(item[0]));
      });
    } else {
      box.appendChild(document.createTextNode(" " + fmt(entry.min)));
      var bar = document.createElement("span");
      bar.className = "dp-bar";
      bar.style.background = "linear-gradient(to right," + colorscale.map(function (s) {
        return s[1] + " " + (100 * s[0]) + "%"; }).join(",") + ")";
      box.appendChild(bar);
      box.appendChild(document.createTextNode(fmt(entry.max)));
    }
    var note = document.createElement("span");
    note.style.color = "#666";
    note.textContent = "  (" + entry.note + ")";
    box.appendChild(note);
  }
  var select = document.getElementById("select-color-function");
  if (select) { select.addEventListener("input", function (e) {
    draw(parseInt(e.target.value, 10)); }); }
  draw(0);
})();"""


def _json_at(page: str, marker: str) -> tuple[int, int, Any]:
    start = page.find(marker)
    if start < 0:
        raise DeepProfileError(f"kmapper's page has no {marker.strip()!r}; its template changed.")
    start += len(marker)
    value, end = json.JSONDecoder().raw_decode(page, start)
    return start, end, value


def render_mapper_page(
    result: Any,
    *,
    thumbnails: Mapping[int, str] | None = None,
    title: str | None = None,
    max_thumbnails: int = 6,
    extra_colours: Mapping[str, Any] | None = None,
) -> str:
    """The standalone HTML page of a mapper graph (see the module docstring).

    ``thumbnails`` maps a store row (``result.point_sample`` of a point) to a data URI.
    ``extra_colours`` adds colour functions, name -> one value per point (a node shows the
    mean of its members: e.g. a concept's 0/1 indicator gives the node's concept share).
    """
    import kmapper
    from jinja2.utils import htmlsafe_json_dumps

    if not result.nodes:
        raise DeepProfileError(
            f"The mapper graph of {result.layer!r} has no nodes, so there is nothing to draw. "
            "Use a larger eps, fewer intervals or more overlap."
        )
    thumbs = dict(thumbnails or {})
    colours, names = _colour_values(result, extra_colours)
    stats = result.stats
    meta = {
        "Layer": result.layer,
        "Lens": result.params.get("lens"),
        "Cover": f"{result.params.get('intervals')} intervals, overlap "
        f"{result.params.get('overlap')}",
        "Clusterer": result.params.get("clusterer"),
        "Components / loops": f"{stats.n_components} / {stats.n_loops}",
        "Points in no node": f"{100 * stats.uncovered_fraction:.1f}%",
    }
    if stats.node_purity is not None:
        meta["Node-wise purity"] = f"{stats.node_purity:.3f}"
        meta["Class-wise purity (mean)"] = f"{stats.class_purity_mean:.3f}"
    warning = cover_warning(result)
    if warning:
        meta["Warning"] = warning
    for key in ("model", "dataset"):
        if result.provenance.get(key) is not None:
            meta[key.capitalize()] = json.dumps(result.provenance[key], default=str)
    meta = {_esc(k): _esc(v) for k, v in meta.items()}
    page_title = title or f"deepprofile mapper: {result.layer or 'graph'}"
    mapper = kmapper.KeplerMapper(verbose=0)
    page = mapper.visualize(
        result.kmapper_graph(),
        color_values=colours,
        color_function_name=names,
        custom_meta=meta,
        lens=np.asarray(result.lens),
        lens_names=[f"lens[{d}]" for d in range(np.asarray(result.lens).shape[1])],
        title=_esc(page_title),
        save_file=False,
    )
    # Replace each node's member list by our panel; a node coloured by label shows its
    # majority label (kmapper would average label numbers).
    start, end, graph = _json_at(page, _GRAPH_MARKER)
    by_id = {node.id: node for node in result.nodes}
    labels = None if result.labels is None else np.asarray(result.labels)
    for entry in graph["nodes"]:
        node = by_id[entry["name"]]
        entry["tooltip"]["custom_tooltips"] = _node_panel(node, result, thumbs, max_thumbnails)
        if labels is not None and node.majority_label is not None:
            lo, hi = labels.min(), labels.max()
            scaled = (node.majority_label - lo) / (hi - lo) if hi > lo else 0.0
            for per_function in entry["color"]:
                per_function[0] = float(scaled)
    page = page[:start] + str(htmlsafe_json_dumps(graph)) + page[end:]
    page = _fix_projection_columns(page)
    style = _thumb_style(_thumb_rows(result, thumbs, max_thumbnails), thumbs)
    page = _insert_before(page, "</head>", style + _LEGEND_STYLE)
    legend = htmlsafe_json_dumps(_legend(result, colours, names))
    page = _insert_before(page, "</body>",
                          _inline_script(_LEGEND_SCRIPT.replace("__LEGEND__", str(legend))))
    return make_offline(page)


def write_mapper_page(result: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`render_mapper_page` to ``path`` (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_mapper_page(result, **kwargs), encoding="utf-8")
    tmp.replace(path)
    return path

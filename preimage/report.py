"""Reports of a sweep: a labelled grid, curves over iterations, a metrics table and one HTML page.

    preimage sweep --recipe depth sample:chelsea      # -> out/sweep-depth
    preimage report out/sweep-depth                  # -> out/sweep-depth/report/report.html

    >>> from preimage.report import write_report
    >>> paths = write_report("out/sweep-depth")       # {"grid": ..., "curves": ..., "csv": ..., "html": ...}

Files (in ``SWEEP_DIR/report`` unless ``out`` is given; derived from the runs, so they are
rewritten every time):

- ``grid.png``: the original photo, then one reconstruction per value of the column axis (the last
  swept axis other than ``image``, or ``cols``); one row per combination of the other swept axes.
- ``curves.png``: the objective, the normalized feature error ``||Φ(x) - Φ0|| / ||Φ0||`` at each
  target layer (from the reconstruction term, so it is measured on the jittered image during the
  jitter phase) and the TV prior term, over the iterations, one line per run.
- ``metrics.png``: final normalized feature error, PSNR, SSIM and wall time per run.
- ``metrics.csv``: one row per run: the swept values, normalized feature error, PSNR (dB), SSIM,
  TV ratio, class agreement (top-1 of the reconstruction = top-1 of the photo), wall time (s).
- ``report.html``: all of the above in one self-contained page (images are data URIs).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .errors import PreimageError, did_you_mean
from .sweep import load_sweep

__all__ = ["write_report", "metrics_rows", "grid_image", "curves_png", "metrics_png", "CSV_COLUMNS"]

#: the fixed columns of metrics.csv (the swept axes come after ``run``)
CSV_COLUMNS = [
    "run", "image", "model", "layers", "preset", "optimizer", "lr", "lambda_tv", "lambda_alpha", "steps", "seed",
    "lr_used", "lambda_tv_used", "status", "feature_error", "feature_error_by_layer", "feature_error_moved",
    "photo_error_moved", "psnr_db", "ssim", "tv_ratio", "top1_agrees", "top1_original", "top1_reconstruction", "p_original_class", "wall_time_s", "total_time_s", "key", "dir",
]


# ---------------------------------------------------------------------------------------------
# labels


_SHORT = {"lambda_tv": "TV", "lambda_alpha": "alpha-norm", "input_size": "size"}


def _display(meta: dict[str, Any], axis: str | None, value: Any) -> str:
    """How a value of an axis is shown: the sweep's display name, else ``"lr 0.01"`` for settings
    (numbers need their axis to mean anything), else the value (layer, model, image names)."""
    if axis is None:
        return str(value)
    names = (meta.get("display") or {}).get(axis) or {}
    if str(value) in names:
        return str(names[str(value)])
    if axis in ("image", "model", "layer", "optimizer", "preset", "weights") or "+" in axis:
        return str(value)
    v = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{_SHORT.get(axis, axis)} {v or 'none'}"  # "": an empty tuple (decay_steps without drops)


def _axis_values(meta: dict[str, Any], axis: str) -> list[Any]:
    """An axis's values as the runs' labels give them (sweep.json keeps a tuple setting's values,
    e.g. ``decay_steps``, as lists; a run's label is ``"150 · 225"``)."""
    from .sweep.axes import _label

    return [_label(tuple(v)) if isinstance(v, list) else v for v in (meta.get("axes") or {}).get(axis, [])]


def _axis_title(axis: str) -> str:
    return {"lambda_tv": "TV weight", "lambda_alpha": "alpha-norm weight", "lr": "learning rate",
            "model+layer": "model · layer", "model+layer+preset": "model · layer"}.get(axis, axis.replace("_", " "))


def run_label(meta: dict[str, Any], run: dict[str, Any]) -> str:
    """The run's values of the swept axes, e.g. ``"blocks.3 (middle)"`` or ``"lr 0.01 · seed 1"``."""
    swept = meta.get("swept", [])
    labels = run.get("labels", {})
    if not swept:
        return run["spec"]["layer"]
    return " · ".join(_display(meta, a, labels.get(a)) for a in swept)


# ---------------------------------------------------------------------------------------------
# table


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def metrics_rows(meta: dict[str, Any], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per run (the CSV's rows): swept values, settings, final metrics and times."""
    swept = meta.get("swept", [])
    rows = []
    for run in runs:
        spec = run["spec"]
        row: dict[str, Any] = {"run": run_label(meta, run)}
        for a in swept:
            row[a] = run["labels"].get(a)
        cfg = run["manifest"]["config"] if run["complete"] else {**spec.get("overrides", {})}
        row.update(image=spec["image"], model=spec["model"], layers=spec["layer"], preset=spec.get("preset"),
                   optimizer=cfg.get("optimizer"), lr=cfg.get("lr"), lambda_tv=cfg.get("lambda_tv"),
                   lambda_alpha=cfg.get("lambda_alpha"), steps=cfg.get("steps"), seed=cfg.get("seed"))
        if run["complete"]:
            m = next(iter(run["manifest"]["metrics"].values()))
            fe = m.get("feature_error", {})
            used = run["manifest"].get("effective") or {}  # after the preset's stride rules
            row.update(
                lr_used=used.get("lr"), lambda_tv_used=used.get("lambda_tv"),
                status=run["manifest"].get("status"),
                feature_error=_mean(list(fe.values())),
                feature_error_by_layer=";".join(f"{k}={v:.4g}" for k, v in fe.items()),
                feature_error_moved=_mean(list((m.get("feature_error_moved") or {}).values())),
                photo_error_moved=_mean(list((m.get("photo_error_moved") or {}).values())),
                psnr_db=m.get("psnr"), ssim=m.get("ssim"), tv_ratio=m.get("tv_ratio"),
                top1_agrees=m.get("top1_agrees"), top1_original=m.get("top1_original"),
                top1_reconstruction=m.get("top1_reconstruction"), p_original_class=m.get("p_original_class"),
                wall_time_s=run["info"].get("seconds"), total_time_s=run["info"].get("wall_seconds"),
            )
        else:
            row["status"] = "not run"
        row.update(key=run["key"], dir=str(run["dir"]))
        rows.append(row)
    return rows


def _csv_bytes(rows: list[dict[str, Any]], swept: list[str]) -> bytes:
    cols = ["run", *[a for a in swept if a not in CSV_COLUMNS], *CSV_COLUMNS[1:]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r.get(k), float) else r[k]))
                    for k in cols})
    return buf.getvalue().encode()


# ---------------------------------------------------------------------------------------------
# grid


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _layout(meta: dict[str, Any], runs: list[dict[str, Any]], cols: str | None):
    swept = list(meta.get("swept", []))
    if cols is not None:
        if cols not in swept:
            raise PreimageError(f"cols {cols!r} (--cols) is not a swept axis" + did_you_mean(cols, swept)
                                + (f"; swept axes: {', '.join(swept)}" if swept else "; nothing was swept"))
        col_axis: str | None = cols
    else:
        col_axis = next((a for a in reversed(swept) if a != "image"), None)
    row_axes = [a for a in swept if a != col_axis]
    col_values = _axis_values(meta, col_axis) if col_axis else [None]
    row_keys: list[tuple] = []
    for run in runs:
        k = tuple(run["labels"].get(a) for a in row_axes)
        if k not in row_keys:
            row_keys.append(k)
    return col_axis, row_axes, col_values, row_keys


def _fixed_settings(meta: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """The settings shared by every run (model, preset, steps, optimizer, lr, priors, seed, size)."""
    swept = {p for a in meta.get("swept", []) for p in a.split("+")}
    done = [r for r in runs if r["complete"]]
    if not done:
        return []
    def value(run: dict[str, Any], k: str) -> Any:
        if k in ("model", "preset"):
            return run["spec"].get(k)
        if k == "input_size":
            try:
                with Image.open(run["path"] / f"{run['info']['name']}.png") as im:
                    return im.width
            except OSError:
                return None
        return run["manifest"]["config"].get(k)

    out = []
    for k in ("model", "preset", "steps", "optimizer", "lr", "lambda_tv", "lambda_alpha", "seed", "input_size"):
        vals = {json_key(value(r, k)) for r in done}
        v = value(done[0], k)
        if k in swept or len(vals) != 1 or v is None:
            continue  # swept, or not the same for every run
        if k == "input_size":
            out.append(f"input {v} px")
        else:
            out.append(f"{_SHORT.get(k, k)} {v:g}" if isinstance(v, float) else f"{_SHORT.get(k, k)} {v}")
    return out


def json_key(v: Any) -> str:
    return repr(v)


def grid_image(meta: dict[str, Any], runs: list[dict[str, Any]], *, cols: str | None = None,
               cell: int | None = None, title: str | None = None) -> Image.Image:
    """The original and the reconstructions, rows and columns named after the swept axes."""
    from .models.shallow import is_shallow_name
    from .viz import grid

    col_axis, row_axes, col_values, row_keys = _layout(meta, runs, cols)

    done = [r for r in runs if r["complete"]]
    if cell is None and done:
        # models with different input sizes: show every cell at the smallest width
        widths = set()
        for r in done:
            with Image.open(r["path"] / f"{r['info']['name']}.png") as im:
                widths.add(im.width)
        cell = min(widths) if len(widths) > 1 else None

    def load(path: Path, shallow: str | None = None) -> Image.Image | None:
        if not path.is_file():
            return None
        im = Image.open(path).convert("RGB")
        if shallow:  # HOG / SIFT do not fix contrast (SIFT not colour): shown as tasks/shallow.py does
            from .images import to_pil, to_tensor
            from .tasks.shallow import gray, stretch

            t = stretch(to_tensor(im, im.width)[0])
            im = to_pil(gray(t) if shallow.startswith("dsift") else t)
        if cell and im.width != cell:
            im = im.resize((cell, round(im.height * cell / im.width)), Image.Resampling.LANCZOS)
        return im

    cells: list[Image.Image | None] = []
    labels: list[str | None] = []
    row_labels: list[str] = []
    # images in columns: each column's photo differs, so the originals make a first row (one per
    # column) instead of a first column that could show only one of them
    by_image = col_axis == "image"

    def original_of(group: list[dict[str, Any]]) -> Image.Image | None:
        r = next((r for r in group if r["complete"]), None)
        return load(r["path"] / f"{r['info']['name']}_original.png") if r is not None else None

    if by_image:
        for cv in col_values:
            cells.append(original_of([r for r in runs if r["labels"].get("image") == cv]))
            labels.append(f"original {_display(meta, 'image', cv)}")
        if row_axes:
            row_labels.append("original")
    for rk in row_keys:
        in_row = [r for r in runs if tuple(r["labels"].get(a) for a in row_axes) == rk]
        if not by_image:
            cells.append(original_of(in_row))
            labels.append("original")
        for cv in col_values:
            match = [r for r in in_row if col_axis is None or r["labels"].get(col_axis) == cv]
            r = match[0] if match else None
            shallow = r["spec"]["model"] if r is not None and is_shallow_name(r["spec"]["model"]) else None
            img = load(r["path"] / f"{r['info']['name']}.png", shallow) if r is not None and r["complete"] else None
            cells.append(img)
            text = _display(meta, col_axis, cv) if col_axis else "reconstruction"
            text += " (stretched)" if shallow else ""
            labels.append(text if img is not None else f"{text} (not run)")
        if row_axes:
            row_labels.append(" · ".join(_display(meta, a, v) for a, v in zip(row_axes, rk)))
    # the largest caption font (14 to 10 px) at which every caption fits its cell; at 10 px the cells
    # widen to the longest caption (small images: "efficientnet_lite0" and "_lite1" stay apart)
    width = max((c.width for c in cells if c is not None), default=cell or 224)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    size = next((px for px in (14, 13, 12, 11) if all(probe.textlength(t or "", font=_font(px)) <= width
                                                       for t in labels)), 10)
    body = grid(cells, ncols=len(col_values) + (0 if by_image else 1), labels=labels,
                row_labels=row_labels or None, pad=6, font_size=size, fit_labels=True)
    # header: title and what the rows and columns are
    fixed = _fixed_settings(meta, runs)
    head = title or meta.get("title") or "Feature inversion sweep"
    sub = []
    if col_axis:
        sub.append(f"columns: {_axis_title(col_axis)}")
    if row_axes:
        sub.append(f"rows: {' · '.join(_axis_title(a) for a in row_axes)}")
    lines = [(head, 20, (0, 0, 0)), ("   ".join(sub), 14, (0, 0, 0))]
    if fixed:
        lines.append(("same for all: " + ", ".join(fixed), 12, (90, 90, 90)))
    height = sum(px + 6 for _, px, _ in lines) + 8
    width = max(body.width, max(int(probe.textlength(t, font=_font(px))) + 16 for t, px, _ in lines))
    canvas = Image.new("RGB", (width, body.height + height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 6
    for text, px, colour in lines:
        draw.text((8, y), text, fill=colour, font=_font(px))
        y += px + 6
    canvas.paste(body, (0, height))
    return canvas


# ---------------------------------------------------------------------------------------------
# plots


def _colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def curves_png(meta: dict[str, Any], runs: list[dict[str, Any]]) -> bytes:
    """Objective, normalized feature error per target layer and TV term over the iterations."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

    done = [r for r in runs if r["complete"] and r["history"]]
    fig = Figure(figsize=(15, 4.6))
    axs = fig.subplots(1, 3)
    colors = _colors(len(done))
    styles = ["-", "--", ":", "-."]
    for r, c in zip(done, colors):
        hist = r["history"]
        steps = [h["step"] for h in hist]
        label = run_label(meta, r)
        axs[0].plot(steps, [h["loss"] for h in hist], color=c, label=label, lw=1.4)
        cfg = r["manifest"]["config"]
        layers = r["manifest"].get("layers", [])
        for j, lw in enumerate(layers):
            key = f"rec[{lw['name']}]"
            denom = cfg.get("rec_weight", 1.0) * lw.get("weight", 1.0)
            if key in hist[0] and denom > 0:
                ys = [math.sqrt(max(h[key], 0.0) / denom) for h in hist]
                axs[1].plot(steps, ys, color=c, ls=styles[j % len(styles)], lw=1.4,
                            label=label if len(layers) == 1 else f"{label}: {lw['name']}")
        if "tv" in hist[0]:
            axs[2].plot(steps, [h["tv"] for h in hist], color=c, label=label, lw=1.4)
    titles = ["Objective (total loss)", "Normalized feature error at the target layer(s)", "TV prior term (weighted)"]
    ylabels = ["loss (dimensionless)", "‖Φ(x) − Φ₀‖ / ‖Φ₀‖", r"$\lambda_{TV}\,R_{TV}$ (dimensionless)"]
    for ax, t, yl in zip(axs, titles, ylabels):
        ax.set_title(t, fontsize=11)
        ax.set_xlabel("iteration")
        ax.set_ylabel(yl)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ys = [y for line in ax.lines for y in line.get_ydata()]
            if min(ys) > 0 and max(ys) / min(ys) > 20:  # log only when the values span decades
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
        else:
            ax.text(0.5, 0.5, "no data (term not used)", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
    handles, labels = axs[1].get_legend_handles_labels()
    if not handles:
        handles, labels = axs[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=9, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(meta.get("title") or "Optimization curves", fontsize=13)
    fig.tight_layout(rect=(0, 0.06 + 0.045 * ((len(labels) - 1) // 4 if handles else 0), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def metrics_png(meta: dict[str, Any], rows: list[dict[str, Any]]) -> bytes:
    """Horizontal bars of the final metrics per run."""
    from matplotlib.figure import Figure

    done = [r for r in rows if r.get("feature_error") is not None or r.get("psnr_db") is not None]
    panels = [("feature_error", "Normalized feature error", "‖Φ(x̂) − Φ₀‖ / ‖Φ₀‖ (lower is closer)"),
              ("psnr_db", "PSNR to the photo", "dB (higher is closer)"),
              ("ssim", "SSIM to the photo", "SSIM (1 = identical)"),
              ("wall_time_s", "Wall time of the optimization", "seconds")]
    n = max(1, len(done))
    fig = Figure(figsize=(15, 1.2 + 0.42 * n))
    axs = fig.subplots(1, len(panels), sharey=True)
    labels = [r["run"] for r in done]
    ys = list(range(n))
    colors = _colors(n)
    for ax, (key, title, xl) in zip(axs, panels):
        vals = [r.get(key) if r.get(key) is not None else 0.0 for r in done]
        ax.barh(ys[: len(vals)], vals, color=colors[: len(vals)])
        for y, v in zip(ys, vals):
            ax.text(v, y, f" {v:.3g}", va="center", fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel(xl)
        ax.grid(True, axis="x", alpha=0.3)
        ax.margins(x=0.25)
    axs[0].set_yticks(ys[: len(labels)], labels)
    axs[0].invert_yaxis()
    fig.suptitle("Final metrics per run", fontsize=13)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# html


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;
color:#222;padding:0 16px}h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
img{max-width:100%;height:auto}table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;
padding:4px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}.muted{color:#666}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:600}
"""


def html_page(meta: dict[str, Any], rows: list[dict[str, Any]], images: dict[str, bytes], *,
              sweep_dir: str, missing: int) -> str:
    e = html.escape
    title = meta.get("title") or "Feature inversion sweep"
    swept = meta.get("swept", [])
    axes_rows = "".join(
        f"<tr><td class=l>{e(_axis_title(a))}</td><td class=l>{e(', '.join(_display(meta, a, v) for v in vals))}</td></tr>"
        for a, vals in ((a, _axis_values(meta, a)) for a in meta.get("axes", {})))
    show = ["run", "status", "feature_error", "psnr_db", "ssim", "tv_ratio", "top1_agrees", "top1_reconstruction",
            "wall_time_s"]
    heads = {"run": "run", "status": "status", "feature_error": "feature error", "psnr_db": "PSNR (dB)",
             "ssim": "SSIM", "tv_ratio": "TV ratio", "top1_agrees": "same top-1 class",
             "top1_reconstruction": "top-1 of reconstruction", "wall_time_s": "wall time (s)"}
    thead = "".join(f"<th class={'l' if k in ('run', 'top1_reconstruction', 'status') else 'r'}>{e(heads[k])}</th>"
                    for k in show)
    tbody = "".join("<tr>" + "".join(
        f"<td class={'l' if k in ('run', 'top1_reconstruction', 'status') else 'r'}>{e(_fmt(r.get(k)))}</td>"
        for k in show) + "</tr>" for r in rows)
    total = sum(r.get("total_time_s") or 0 for r in rows)
    original = next((r.get("top1_original") for r in rows if r.get("top1_original")), None)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p class=muted>preimage {e(str(meta.get('preimage', '')))} · sweep <code>{e(sweep_dir)}</code>"
        + (f" · recipe <b>{e(meta['recipe'])}</b>" if meta.get("recipe") else "")
        + f" · {len(rows) - missing} of {len(rows)} runs done · {total:.0f} s of compute</p>",
        f"<h2>Axes</h2><table>{axes_rows}</table>",
        "<p class=muted>Swept: " + (e(", ".join(_axis_title(a) for a in swept)) or "nothing") + ".</p>",
        "<h2>Reconstructions</h2><p>Each image is optimized from noise until its activations at the named "
        "layer(s) match those of the original (left column).</p>",
        f"<img alt='grid of reconstructions' src='{_data_uri(images['grid'])}'>",
        "<h2>Curves over iterations</h2>",
        f"<img alt='loss curves' src='{_data_uri(images['curves'])}'>",
        "<h2>Final metrics</h2>",
        f"<img alt='metrics per run' src='{_data_uri(images['metrics'])}'>",
        f"<table><thead><tr>{thead}</tr></thead><tbody>{tbody}</tbody></table>",
        "<dl class=muted>"
        "<dt>feature error</dt><dd>‖Φ(x̂) − Φ(x₀)‖ / ‖Φ(x₀)‖ at the target layer(s), averaged over layers "
        "(0: the network sees the same thing)</dd>"
        "<dt>PSNR, SSIM</dt><dd>pixel and structural similarity to the original (higher is closer); a "
        "reconstruction from a deep layer can be right for the network and far from the photo</dd>"
        "<dt>TV ratio</dt><dd>total variation of the reconstruction / of the original (&lt; 1: smoother)</dd>"
        "<dt>same top-1 class</dt><dd>the network's top-1 class for the reconstruction equals its top-1 for "
        f"the original{(' (' + e(original) + ')') if original else ''}</dd></dl>",
        "<p class=muted>Files: grid.png, curves.png, metrics.png, metrics.csv next to this page.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------


def write_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, cols: str | None = None,
                 cell: int | None = None, title: str | None = None) -> dict[str, Path]:
    """Write grid.png, curves.png, metrics.png, metrics.csv and report.html for a sweep folder.

    Args:
        sweep_dir: a folder written by :func:`preimage.sweep.run_sweep` (runs not yet done show as
            empty cells and "not run" rows).
        out: where to write (default ``SWEEP_DIR/report``).
        cols: the swept axis laid out in columns (default: the last swept axis other than image).
        cell: width of each grid cell in pixels (default: the reconstructions' own size).
        title: the grid's and page's title (default: the recipe's, or a generic one).
    """
    from .io import all_or_nothing, atomic_write

    if cell is not None and (isinstance(cell, bool) or not isinstance(cell, int) or cell < 1):
        raise PreimageError(f"cell must be a whole number of pixels >= 1, not {cell!r}")
    sweep_dir = Path(sweep_dir)
    meta, runs = load_sweep(sweep_dir)
    if title:
        meta["title"] = title
    if not runs:
        raise PreimageError(f"{sweep_dir} has no runs")
    if not any(r["complete"] for r in runs):
        raise PreimageError(f"no run of {sweep_dir} has finished yet; run `preimage sweep` again to compute them")
    damaged = [r for r in runs if r.get("problem") not in (None, "missing")]
    if damaged:
        import warnings

        from .errors import PreimageWarning

        first = damaged[0]
        warnings.warn(f"{len(damaged)} run(s) of {sweep_dir} are damaged and shown as not done ({first['path'].name}: "
                      f"{first['problem']}); run the sweep again to recompute them", PreimageWarning, stacklevel=2)
    out = Path(out) if out is not None else sweep_dir / "report"
    if cols is not None:  # a wrong --cols is the user's, not a damaged run file's
        _layout(meta, [], cols)
    if out.exists() and not out.is_dir():
        raise PreimageError(f"{out} is a file, not a folder; give an output folder (--out; it is created if "
                            "missing)")
    from .io import check_outputs

    check_outputs([out / n for n in ("grid.png", "curves.png", "metrics.png", "metrics.csv", "report.html")],
                  force=True)  # derived files, rewritten every time; a folder in the way or no write access
    try:
        rows = metrics_rows(meta, runs)
        buf = io.BytesIO()
        grid_image(meta, runs, cols=cols, cell=cell).save(buf, format="PNG", optimize=True)
        images = {"grid": buf.getvalue(), "curves": curves_png(meta, runs), "metrics": metrics_png(meta, rows)}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:  # files that parse but do not fit
        raise PreimageError(f"{sweep_dir} holds run files this version of preimage cannot read "
                            f"({type(exc).__name__}: {exc}); run the sweep again with --force") from None
    missing = sum(not r["complete"] for r in runs)
    with all_or_nothing():  # the five files appear together; a failed save leaves the last report as it was
        paths = {
            "grid": atomic_write(out / "grid.png", images["grid"]),
            "curves": atomic_write(out / "curves.png", images["curves"]),
            "metrics": atomic_write(out / "metrics.png", images["metrics"]),
            "csv": atomic_write(out / "metrics.csv", _csv_bytes(rows, meta.get("swept", []))),
        }
        page = html_page(meta, rows, images, sweep_dir=str(sweep_dir), missing=missing)
        paths["html"] = atomic_write(out / "report.html", page.encode())
    return paths

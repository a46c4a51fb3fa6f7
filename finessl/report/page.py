"""``main.py report``: report.html and its figures as PNG files, from run folders.

One run: OUT/report.html, OUT/figures/*.png. Several runs (or a sweep folder): the
sweep's table, bar chart and overlaid curves in OUT/report.html and OUT/figures/,
and each run's own page in OUT/runs/<its path below the runs' common folder>/.
Every page is self-contained (each figure embedded, and linked to its PNG file).
"""
from __future__ import annotations

import base64
import html
import math
import os

from finessl.report import figures
from finessl.errors import UserError
from finessl.io import atomic_write_text
from finessl.report import select, sweep
from finessl.report.runs import Run, find_runs

STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
         "padding:2px 8px;text-align:right}th{background:#eee}td:first-child{text-align:left}"
         "img{max-width:100%}pre{background:#f6f6f6;padding:.5em;max-height:30em;overflow:auto}")


def build(paths: list[str], out: str | None = None, epochs: list[int] | None = None,
          metric: str = "last") -> str:
    """Write the report of the runs at ``paths``; the path of report.html."""
    runs = find_runs(paths)
    if out is None:
        out = os.path.join(paths[0] if len(paths) == 1 else ".", "report")
    if len(runs) == 1:
        return _run_page(runs[0], out, epochs)
    root = os.path.commonpath([os.path.abspath(r.path) for r in runs])
    links = []
    for run in runs:
        rel = os.path.relpath(os.path.abspath(run.path), root)
        page = os.path.join(out, "runs", rel if rel != "." else os.path.basename(root))
        links.append((run, os.path.relpath(_run_page(run, page, epochs), out)))
    try:
        body = sweep_body(runs, out, links, metric)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise UserError(f"report: the runs' records cannot be drawn together ({_why(e)})") from None
    return _write_page(out, f"FineSSL sweep of {len(runs)} runs", body)


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"


def _run_page(run: Run, folder: str, epochs: list[int] | None) -> str:
    """One run's page; records the figures cannot use (a hand-edited file) are one line."""
    try:
        body = run_body(run, folder, epochs)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise UserError(f"{run.path}: its records cannot be drawn ({_why(e)})") from None
    return _write_page(folder, f"FineSSL run {run.path}", body)


def _write_page(folder: str, title: str, body: str) -> str:
    path = os.path.join(folder, "report.html")
    atomic_write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>"
                      f"{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
                      f"<h1>{html.escape(title)}</h1>\n{body}</body></html>\n", path)
    return path


def _figure(figure, folder: str, name: str, caption: str) -> str:
    """Save ``figure`` as folder/figures/name.png; the HTML that embeds and links it."""
    os.makedirs(os.path.join(folder, "figures"), exist_ok=True)
    path = os.path.join(folder, "figures", f"{name}.png")
    figures.save_png(figure, path)
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return (f"<figure><a href='figures/{name}.png'><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{data}'></a><figcaption>{html.escape(caption)}"
            f"</figcaption></figure>\n")


def _table(header: list[str], rows: list[list], cls: str) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table class='{cls}'><tr>{head}</tr>{body}</table>\n"


def pct(value) -> str:
    """A fraction as a percentage with 2 decimals ('–' when not recorded)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{100 * value:.2f}"


def num(value, digits: int = 4) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def chosen_epochs(history: list[dict], wanted: list[int] | None) -> list[dict]:
    """The entries with confidence histograms at the epochs asked for; by default the
    first, the middle and the last such epoch."""
    have = [e for e in history if e.get("confidence")]
    if wanted:
        return [e for e in have if e["epoch"] in wanted]
    picks = sorted({0, len(have) // 2, len(have) - 1}) if have else []
    return [have[i] for i in picks]


def run_body(run: Run, folder: str, epochs: list[int] | None) -> str:
    history, last = run.history, run.history[-1]
    summary = run.summary()
    diag = run.diagnostics or {}
    aux_trained = bool(diag.get("aux_trained", False))
    state = "finished" if run.finished else f"in progress (epoch {last['epoch']} recorded)"
    rows = [["algorithm", run.get("algorithm", "–")], ["method", run.method],
            ["setting", run.setting], ["seed", run.get("seed", "–")], ["state", state],
            ["best test top-1 (%)", pct(summary["best_top1"])],
            ["best epoch", summary["best_epoch"]],
            ["best epoch chosen by", "the test labels: an oracle, for reference only"],
            ["last test top-1 (%)", pct(summary["last_top1"])],
            ["last epoch", summary["last_epoch"]],
            ["test top-1 at the best validation epoch (%)", pct(summary.get("best_val_top1"))],
            ["best validation epoch", summary.get("best_val_epoch", "no validation split")],
            ["balanced accuracy, last epoch (%)", pct(last.get("balanced_acc"))],
            ["ECE, main head, last epoch", num(last.get("ece"))],
            ["test top-1, aux head, last epoch (%)", pct(last.get("top1_aux"))],
            ["ECE, aux head, last epoch", num(last.get("ece_aux"))],
            ["pseudo-label accuracy, last epoch (%)", pct(last.get("pseudo_acc"))],
            ["pseudo-labelled share of the unlabeled set, last epoch (%)",
             pct(last.get("pseudo_rate"))],
            ["out-of-class share of the pseudo-labels, last epoch (%)",
             pct(last.get("pseudo_ood"))],
            ["paper top-1 for this setting (%)", num(run.get("paper_top1"), 2)],
            ["split sha256", diag.get("split_hash", "not recorded")]]
    parts = [f"<p>Run folder <code>{html.escape(run.path)}</code>.</p>",
             "<h2>Summary</h2>", _table(["quantity", "value"], rows, "summary")]
    names = run.classnames
    drawn = [("curves", figures.learning_curves([(run.label, history)]), "learning curves"),
             ("pace", figures.pace_heatmap(history, names),
              "per-class learning pace beta over training (docs/method.md §3)"),
             ("confidence",
              figures.confidence_histograms(chosen_epochs(history, epochs), aux_trained),
              "pseudo-label confidence, correct against wrong, main and aux head"),
             ("reliability", figures.reliability_diagram(last, aux_trained),
              "reliability diagram of the test set at the last epoch, main and aux head"),
             ("per_class", figures.per_class(last, diag.get("confusion"), names),
              "per-class test accuracy and confusion matrix at the last epoch")]
    parts.append("<h2>Figures</h2>")
    for name, figure, caption in drawn:
        parts.append(_figure(figure, folder, name, caption))
    parts.append("<h2>Every epoch</h2>")
    parts.append(_table(
        ["epoch", "test top-1 (%)", "balanced (%)", "ECE", "ECE aux", "pseudo-label acc (%)",
         "mask rate", "total loss"],
        [[e["epoch"], pct(e["top1"]), pct(e.get("balanced_acc")), num(e.get("ece")),
          num(e.get("ece_aux")), pct(e.get("pseudo_acc")),
          num(e.get("train", {}).get("pseudo/mask_rate"), 3),
          num(e.get("train", {}).get("loss/total"), 4)] for e in history], "epochs"))
    counts = last.get("pseudo_counts") or []
    accuracy = last.get("per_class_acc", [])
    parts.append("<h2>Per class, last epoch</h2>")
    parts.append(_table(["class", "test accuracy (%)", "confident pseudo-labels"],
                        [[name, pct(acc), counts[i] if i < len(counts) else "–"]
                         for i, (name, acc) in enumerate(zip(names, accuracy))], "classes"))
    parts.append("<h2>Config</h2>")
    parts.append(f"<pre>{html.escape(run.config_text or 'config.yaml not found')}</pre>")
    return "\n".join(parts)


def sweep_body(runs: list[Run], out: str, links: list[tuple[Run, str]], metric: str) -> str:
    header, rows = sweep.table(runs, metric)
    parts = [f"<p>{len(runs)} runs; test top-1 (%) at the {metric} epoch, mean ± sample std "
             f"over seeds (n = number of seeds when fewer than 3).</p>"]
    if rows:
        parts += ["<h2>Method by setting</h2>", _table(header, rows, "sweep"),
                  _figure(sweep.bar_chart(runs, metric), out, "sweep_bars",
                          "mean ± std over seeds; black: the paper's number")]
    header, rows = sweep.paired(runs, metric)
    if rows:
        parts += ["<h2>FineSSL against each method, paired by seed</h2>",
                  "<p>FineSSL's top-1 minus the method's, per seed, then the mean and "
                  "its 95 % confidence interval (Student's t).</p>",
                  _table(header, rows, "paired")]
    parts.append(_figure(sweep.curves(runs), out, "sweep_curves",
                         "learning curves, mean over seeds of each method and setting"))
    if any("signals" in e or "val_top1" in e for r in runs for e in r.history):
        parts += ["<h2>Choosing without peeking</h2>",
                  "<p>The run and epoch each rule picks (<code>main.py select</code>, "
                  "docs/selection.md), its test top-1 and its gap to the test oracle.</p>"]
        for i, (title, header, rows) in enumerate(select.tables(runs)[0]):
            parts += [f"<h3>{html.escape(title)}</h3>", _table(header, rows, f"select{i}")]
    parts.append("<h2>Runs</h2>")
    parts.append(_table(["run", "method", "setting", "seed", f"{metric} top-1 (%)", "state"],
                        [[r.path, r.method, r.setting, r.get("seed", "–"),
                          pct(r.score(metric)),
                          "finished" if r.finished else "in progress"] for r, _ in links], "runs"))
    parts.append("<ul>" + "".join(f"<li><a href='{html.escape(link)}'>{html.escape(r.label)}</a>"
                                  f"</li>" for r, link in links) + "</ul>")
    return "\n".join(parts)

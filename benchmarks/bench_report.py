"""``edgeclf bench`` outputs: the terminal table, ``report.md``, ``results.json``, ``results.csv`` and PNG plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgeclf.edge_runtime.errors import BackendUnavailableError, ConfigError
from edgeclf.edge_runtime.paths import display_width, pad
from edgeclf.toolkit.io import write_csv, write_json, write_text

from .bench import BenchResult, BenchRow

OUTPUTS = ("report.md", "results.json", "results.csv")
COLUMNS = ("model", "format", "quantization", "threads", "batch", "status", "size_bytes", "accuracy", "f1_macro",
           "roc_auc", "accuracy_change_pp", "agreement", "init_s", "first_inference_ms", "warmup_s", "runs",
           "mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "images_per_s", "cold_start_s", "peak_rss_mib",
           "reason", "path")


def _num(v, fmt: str, scale: float = 1.0) -> str:
    return "" if v is None else format(v * scale, fmt)


HEADER = ["model", "thr", "batch", "size", "acc %", "F1", "Δacc pp", "agree %", "p50 ms", "p90 ms", "p99 ms",
          "img/s", "cold s", "RSS MiB"]


def _cells(r: BenchRow) -> list[str]:
    if r.status != "ok":
        head = [r.model, f"{r.threads}", f"{r.batch}", f"{r.size_bytes / 1024:.0f}K", "FAILED"]
        return head + [""] * (len(HEADER) - len(head))
    return [
        r.model, f"{r.threads}", f"{r.batch}", f"{r.size_bytes / 1024:.0f}K",
        _num(r.accuracy, ".2f", 100), _num(r.f1_macro, ".4f"), _num(r.accuracy_change_pp, "+.2f"),
        _num(r.agreement, ".2f", 100), _num(r.p50_ms, ".3f"), _num(r.p90_ms, ".3f"), _num(r.p99_ms, ".3f"),
        _num(r.images_per_s, ".0f"), _num(r.cold_start_s, ".2f"), _num(r.peak_rss_mib, ".0f"),
    ]


def format_table(rows: list[BenchRow]) -> str:
    """A fixed-width text table, failed rows with their reason underneath."""
    body = [_cells(r) for r in rows]
    widths = [max(display_width(h), *(display_width(c[i]) for c in body)) for i, h in enumerate(HEADER)]
    line = lambda cells: "  ".join(pad(c, w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(HEADER), "  ".join("-" * w for w in widths)]
    for r, cells in zip(rows, body):
        out.append(line(cells))
        if r.status != "ok":
            out.append(f"    ↳ {r.reason}")
    return "\n".join(out)


def markdown_table(rows: list[BenchRow]) -> str:
    """The same table in Markdown, failed rows with their reason in the last column."""
    head = HEADER + ["status"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|"]
    for r in rows:
        status = "ok" if r.status == "ok" else f"failed: {r.reason}".replace("|", "/")
        out.append("| " + " | ".join(_cells(r) + [status]) + " |")
    return "\n".join(out)


# An int8/fp32 latency ratio within this band is reported as "no faster": closer than the machine's noise.
NO_FASTER = (0.95, 1.05)


def summarise(rows: list[BenchRow]) -> list[dict]:
    """Per thread count and batch size: the fastest model, and int8 against fp32 of the same format and folder.

    Which artefact is fastest depends on the CPU (int8 TFLite was 1.4x fp32 on an AVX-512 VNNI Xeon and 0.93x on an
    AVX2-only EPYC, where int8 ONNX was 1.5x fp32 ONNX), so the table is read for the user rather than left to them.
    fp32 and int8 are paired only within one folder (one export), where exactly one of each exists.
    """
    configs = []
    for threads, batch in dict.fromkeys((r.threads, r.batch) for r in rows):
        timed = [r for r in rows if (r.threads, r.batch) == (threads, batch) and r.status == "ok" and r.p50_ms]
        if len(timed) < 2:
            continue
        fastest = min(timed, key=lambda r: r.p50_ms)
        keras = [r for r in timed if r.format == "keras"]
        entry = {"threads": threads, "batch": batch, "fastest": {
            "model": fastest.model, "p50_ms": fastest.p50_ms, "agreement": fastest.agreement,
            "vs_keras": keras[0].p50_ms / fastest.p50_ms if len(keras) == 1 and fastest.format != "keras" else None}}
        pairs = []
        groups: dict[tuple[str, str], list[BenchRow]] = {}
        for r in timed:
            groups.setdefault((r.format, str(Path(r.path).parent)), []).append(r)
        for (fmt, _), members in groups.items():
            fp32 = [r for r in members if r.quantization == "fp32"]
            int8 = [r for r in members if r.quantization == "int8"]
            if fmt == "keras" or len(fp32) != 1 or len(int8) != 1:
                continue
            f, i = fp32[0], int8[0]
            pairs.append({"format": fmt, "fp32": f.model, "int8": i.model, "fp32_p50_ms": f.p50_ms,
                          "int8_p50_ms": i.p50_ms, "speedup": f.p50_ms / i.p50_ms,
                          "size_ratio": i.size_bytes / f.size_bytes if f.size_bytes else None})
        entry["int8_vs_fp32"] = pairs
        configs.append(entry)
    return configs


def summary_lines(configs: list[dict]) -> list[str]:
    """``summarise``'s findings as sentences, one per line."""
    lines = []
    for c in configs:
        f = c["fastest"]
        line = f"{c['threads']} thread(s), batch {c['batch']}: fastest is {f['model']}, p50 {f['p50_ms']:.3f} ms"
        if f["vs_keras"] is not None:
            line += f", {f['vs_keras']:.1f}x the Keras model"
        if f["agreement"] is not None:
            line += f" (agreement {100 * f['agreement']:.2f} %)"
        lines.append(line + ".")
        for p in c["int8_vs_fp32"]:
            line = (f"  int8 vs fp32 {p['format']}: {p['speedup']:.2f}x ({p['int8_p50_ms']:.3f} vs "
                    f"{p['fp32_p50_ms']:.3f} ms)")
            if p["size_ratio"] is not None:
                line += f", {100 * p['size_ratio']:.0f} % of the size"
            if p["speedup"] < NO_FASTER[0]:
                line += "; slower than fp32 on this CPU: its gain here is size only"
            elif p["speedup"] <= NO_FASTER[1]:
                line += "; no faster than fp32 on this CPU: its gain here is size only"
            lines.append(line + ".")
    return lines


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _plots(result: BenchResult, out: Path) -> list[Path]:
    from edgeclf.toolkit._deps import import_pyplot
    from edgeclf.toolkit.plots import _save, plot_confusion

    plt = import_pyplot()
    written = []
    ok = [r for r in result.rows if r.status == "ok"]
    first = {}
    for r in ok:
        first.setdefault(r.model, r)
    points = [r for r in first.values() if r.accuracy is not None]
    if points:
        # A legend, not labels beside the points: artefacts of one model often share an accuracy, and their
        # labels were printed over each other. Each point has its own marker and colour, so coinciding points stay
        # distinguishable too.
        fig, ax = plt.subplots(figsize=(9, 4.5))
        markers = "osD^vP*Xph<>"
        for i, r in enumerate(points):
            ax.scatter(r.p50_ms, 100 * r.accuracy, s=60, marker=markers[i % len(markers)], alpha=0.8,
                       label=f"{r.model} ({r.p50_ms:.3g} ms, {100 * r.accuracy:.2f} %)")
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
        ax.set_xscale("log")
        r0 = points[0]
        ax.set(xlabel=f"p50 latency, ms (log; {r0.threads} thread(s), batch {r0.batch})", ylabel="accuracy %",
               title="Accuracy vs latency")
        ax.grid(alpha=0.3, which="both")
        written.append(_save(fig, out / "accuracy_vs_latency.png"))
    if result.samples_ms:
        labels = list(result.samples_ms)
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(labels)))
        ax.boxplot([result.samples_ms[k] for k in labels], vert=False, showfliers=True, whis=(1, 99),
                   flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
        ax.set_xscale("log")
        ax.set(xlabel="latency per call, ms (log; whiskers p1-p99)", title="Latency distributions")
        ax.grid(alpha=0.3, which="both", axis="x")
        written.append(_save(fig, out / "latency.png"))
    for name, ev in result.evaluation.items():
        if "confusion_matrix" in ev:
            written.append(plot_confusion(np.asarray(ev["confusion_matrix"]), result.class_names,
                                          out / f"confusion_{_file_safe(name)}.png",
                                          f"{name}: accuracy {100 * ev['accuracy']:.2f}%"))
    return written


def write_report(result: BenchResult, out_dir: str | os.PathLike, *, force: bool = False, plots: bool = True
                 ) -> list[Path]:
    """Writes ``report.md``, ``results.json``, ``results.csv`` and the plots into ``out_dir``.

    Raises:
        ConfigError: If results already exist there and ``force`` is not set.
    """
    out = Path(out_dir)
    existing = [out / f for f in OUTPUTS if (out / f).exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists. Pass --force to overwrite it, or --out another folder.")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    plot_note = ""
    if plots:
        try:
            written += _plots(result, out)
        except BackendUnavailableError as exc:
            plot_note = f"Plots not drawn: {exc}"
    rows = [r.to_dict() for r in result.rows]
    summary = summarise(result.rows)
    spec = result.spec
    write_json(out / "results.json", {
        "created": result.created, "data": result.data, "n_images": result.n_images, "class_names": result.class_names,
        "spec": {"threads": list(spec.threads), "batches": list(spec.batches), "runs": spec.runs,
                 "min_seconds": spec.min_seconds, "warmup": spec.warmup, "max_images": spec.max_images},
        "machine": result.machine, "rows": rows, "summary": summary, "warnings": list(result.warnings),
        "evaluation": result.evaluation,
        "latency_samples_ms": result.samples_ms,
    })
    write_csv(out / "results.csv", rows, COLUMNS)
    m = result.machine
    md = [
        "# edgeclf bench", "",
        f"- {result.created}; {m['cpu']} ({m['machine']}), {m.get('affinity_cores') or m['cores']} cores usable, "
        f"instruction sets: {', '.join(m['instruction_sets']) or 'none detected'}",
        "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        f"- data: {result.data}, {result.n_images} images; accuracy and agreement measured once per model "
        "(batches of 32) on the same decoded images; agreement is top-1 agreement with the Keras model",
        f"- latency: one inference call on a batch of preprocessed images (decoding excluded), {spec.warmup} warm-up "
        f"runs, then at least {spec.runs} runs and {spec.min_seconds:g} s; each row in a fresh process; cold start is "
        "process launch to the first result on an image file; RSS is the process's peak before evaluation",
        "", markdown_table(result.rows), "",
    ]
    lines = summary_lines(summary)
    if lines:
        md += [*(f"- {line.strip()}" if not line.startswith(" ") else f"  - {line.strip()}" for line in lines), ""]
    if result.warnings:
        md += ["Warnings:", "", *(f"- {w}" for w in result.warnings), ""]
    md += [f"![{p.stem}]({p.name})" for p in written]
    if plot_note:
        md += ["", plot_note]
    write_text(out / "report.md", "\n".join(md) + "\n")
    return [out / f for f in OUTPUTS] + written

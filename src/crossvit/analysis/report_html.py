"""The run report's HTML: what the page holds (Page) and how it is written out (render).

The page is static: no script, no file or address outside it, so any browser opens it from disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape


@dataclass
class Plot:
    anchor: str
    title: str
    png_base64: str
    caption: str


@dataclass
class Mistake:
    name: str  # the file, or the image's index in the split
    true_class: str
    predicted: str
    p_predicted: float
    p_true: float
    png_base64: str  # the image and its attention maps


@dataclass
class Page:
    run: str
    checkpoint: str
    epoch: int | None
    model: str
    dataset: str
    data_path: str | None
    class_names: list[str]
    confusion: list[list[int]]  # rows: true class; what the counts below are read from
    loss: float
    unreadable: int
    metrics: list[dict]
    commands: list[str]
    config: str | None
    made: str
    figures: list[Plot] = field(default_factory=list)
    mistakes: list[Mistake] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def samples(self) -> int:
        return sum(map(sum, self.confusion))

    @property
    def right(self) -> int:
        return sum(row[i] for i, row in enumerate(self.confusion))

    @property
    def top1(self) -> float:
        return 100 * self.right / max(1, self.samples)

    @property
    def per_class(self) -> list[float]:
        return [100 * row[i] / max(1, sum(row)) for i, row in enumerate(self.confusion)]


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 0 1.5em 3em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
nav a { margin-right: 1em; } .summary { font-size: 1.1em; } .muted { color: #666; font-size: 0.9em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.mistakes { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1em; }
.mistakes figure { margin: 0; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { padding: 0.2em 0.7em; border-bottom: 1px solid #eee; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _img(png_base64: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{png_base64}" alt="{escape(alt)}">'


def _figure(plot: Plot) -> str:
    return (f'<h2 id="{plot.anchor}">{escape(plot.title)}</h2>\n<figure class="plot">{_img(plot.png_base64, plot.title)}'
            f"<figcaption>{escape(plot.caption)}</figcaption></figure>")


def _class_table(page: Page) -> str:
    rows = []
    for i, name in enumerate(page.class_names):
        row = page.confusion[i]
        others = [(count, j) for j, count in enumerate(row) if j != i and count]
        confused = f"{escape(page.class_names[max(others)[1]])} ({max(others)[0]})" if others else "&ndash;"
        rows.append(f"<tr><td>{escape(name)}</td><td class=n>{sum(row)}</td><td class=n>{row[i]}</td>"
                    f"<td class=n>{page.per_class[i]:.2f}</td><td>{confused}</td></tr>")
    return ('<table class="per-class"><tr><th>class</th><th>images</th><th>right</th><th>top-1 %</th>'
            "<th>most often taken for (images)</th></tr>\n" + "\n".join(rows) + "</table>")


def _mistakes(page: Page) -> str:
    wrong = page.samples - page.right
    if not page.mistakes:
        said = (f"{wrong} validation images are wrong; none shown (--worst 0)." if wrong else
                "The model gets every validation image right.")
        return f'<h2 id="mistakes">Most wrong</h2><p>{said}</p>'
    cards = [f'<figure class="mistake">{_img(m.png_base64, m.name)}<figcaption><b>{escape(m.name)}</b>: '
             f"true <i>{escape(m.true_class)}</i>, predicted <i>{escape(m.predicted)}</i> "
             f"({100 * m.p_predicted:.1f}%); the true class got {100 * m.p_true:.2f}%</figcaption></figure>"
             for m in page.mistakes]
    return (f'<h2 id="mistakes">Most wrong</h2>\n<p>Of the {wrong} validation images the model gets wrong, the '
            f"{len(page.mistakes)} whose true class got the least probability. Beside each, where the model looked: "
            "each branch's attention rollout (how its CLS token draws on the patches through all its blocks) and, "
            "where the fusion attends, what each branch's CLS token reads from the other branch in the last "
            "fusion.</p>\n" + '<div class="mistakes">' + "\n".join(cards) + "</div>")


def _epochs_table(metrics: list[dict]) -> str:
    if not metrics:
        return ""

    def cell(record: dict, key: str, form: str) -> str:
        return f"<td class=n>{format(record[key], form)}</td>" if key in record else "<td></td>"

    rows = [f"<tr><td class=n>{r['epoch']}</td>{cell(r, 'train_loss', '.4f')}{cell(r, 'val_loss', '.4f')}"
            f"{cell(r, 'val_top1', '.2f')}{cell(r, 'val_top5', '.2f')}"
            f"<td>{' / '.join(f'{v:.2f}' for v in r.get('val_branch_top1', []))}</td>"
            f"{cell(r, 'lr', '.2e')}{cell(r, 'img_per_s', '.0f')}</tr>" for r in metrics]
    return ('<h2 id="epochs">Epochs</h2>\n<table class="epochs"><tr><th>epoch</th><th>train loss</th><th>val loss</th>'
            "<th>top-1</th><th>top-5</th><th>heads alone</th><th>lr</th><th>img/s</th></tr>\n"
            + "\n".join(rows) + "</table>")


def render(page: Page) -> str:
    """The whole report.html."""
    where = f" ({escape(page.data_path)})" if page.data_path else ""
    epoch = f", epoch {page.epoch}" if page.epoch is not None else ""
    unreadable = f" ({page.unreadable} unreadable files skipped)" if page.unreadable else ""
    commands = "\n".join(escape(c) for c in page.commands) or "(not recorded: the run was started from Python)"
    config = (f'<h2 id="config">Config</h2>\n<pre class="config">{escape(page.config)}</pre>' if page.config else "")
    plots = {plot.anchor: plot for plot in page.figures}
    body = [
        f"<h1>Run report: {escape(page.run)}</h1>",
        f'<p class="summary">{escape(page.model)} ({escape(page.checkpoint)}{epoch}): validation top-1 '
        f"<b>{page.top1:.2f}%</b>, loss {page.loss:.4f}, on {page.samples} images of {escape(page.dataset)} "
        f"{where}{unreadable}.</p>",
        '<nav><a href="#command">command</a>' + "".join(f'<a href="#{a}">{escape(p.title.lower())}</a>'
                                                       for a, p in plots.items())
        + '<a href="#mistakes">most wrong</a><a href="#epochs">epochs</a><a href="#config">config</a></nav>',
        f'<h2 id="command">Command</h2>\n<pre class="command">{commands}</pre>',
        *([_figure(plots["curves"])] if "curves" in plots else []),
        _figure(plots["per-class"]), _class_table(page),
        _figure(plots["confusion"]),
        _mistakes(page),
        _epochs_table(page.metrics),
        config,
        f'<p class="muted">Made {escape(page.made)}; evaluation and figures took {page.seconds:.0f} s.</p>',
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(page.run)}: crossvit run report</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body></html>\n")

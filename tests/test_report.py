"""What a run leaves for people to look at and share: `crossvit report` (one self-contained HTML page,
checked here against `crossvit eval` and, where Chromium is installed, rendered in headless Chromium)
and the model card of `crossvit export --format hub`."""

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

import crossvit
from crossvit.cli import main
from crossvit.inference import evaluate_checkpoint

from imagegen import make_folder_dataset
from tinyrun import PLAIN, one_thread, tiny_args  # noqa: F401 (one_thread: a fixture)

VOID = ("img", "br", "meta", "hr", "input", "link")
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished one-epoch run, started by the command line (so it records its command), trained
    with so small a learning rate that it still gets images wrong."""
    folder = make_folder_dataset(tmp_path_factory.mktemp("data"), classes=3, train_per_class=8, val_per_class=6)
    out = tmp_path_factory.mktemp("run") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *tiny_args(folder, *PLAIN, "optim.lr=1e-5", "epochs=1"), "--output", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


class PageParts(HTMLParser):
    """The images, the text of each element with a class (by "tag.class"), and anything that would leave the page."""

    def __init__(self):
        super().__init__()
        self.images, self.external, self.text, self.open = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append({**attrs, "within": next((c for c in reversed(self.open) if c), None)})
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith(("data:", "#")):
                self.external.append(attrs[key])
        if tag in ("script", "link", "iframe", "object"):
            self.external.append(tag)
        if tag not in VOID:
            self.open.append(f"{tag}.{attrs['class']}" if "class" in attrs else None)

    def handle_endtag(self, tag):
        self.open.pop()

    def handle_data(self, data):
        for name in filter(None, self.open):
            self.text[name] = self.text.get(name, "") + data


def _parse(path):
    parts = PageParts()
    parts.feed(path.read_text(encoding="utf-8"))
    return parts


def _png(src):
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))


def test_the_report_holds_the_runs_results(run, tmp_path):
    assert main(["report", str(run), "--worst", "4"]) == 0
    page = _parse(run / "report.html")
    assert page.external == []  # self-contained: no script, no file or address outside it
    for image in page.images:
        _png(image["src"]).verify()  # each a whole PNG
    # Against crossvit eval of the same weights: the summary's top-1 and each class's row.
    evaluated = evaluate_checkpoint(str(run / "best.pth"), output=str(tmp_path / "eval"))
    assert f"validation top-1 {evaluated['top1']:.2f}%" in page.text["p.summary"]
    rows = re.findall(r"<tr><td>(class_\d)</td><td class=n>(\d+)</td><td class=n>(\d+)</td><td class=n>([\d.]+)</td>",
                      (run / "report.html").read_text())
    assert {name: float(top1) for name, _, _, top1 in rows} == pytest.approx(evaluated["per_class_top1"], abs=0.006)
    assert [[int(n), int(right)] for _, n, right, _ in rows] == [[sum(r), r[i]] for i, r in enumerate(evaluated["confusion"])]
    wrong = evaluated["samples"] - sum(row[i] for i, row in enumerate(evaluated["confusion"]))
    assert wrong > 0, "the fixture's run should get some images wrong"
    mistakes = [i["alt"] for i in page.images if i["within"] == "figure.mistake"]
    assert len(mistakes) == min(4, wrong) and all("/val/class_" in name for name in mistakes)  # named by file
    assert [i["alt"] for i in page.images if i["within"] == "figure.plot"] == [
        "Training curves", "Accuracy by class", "Confusion matrix"]
    assert len(page.images) == 3 + len(mistakes)
    assert f"Of the {wrong} validation images the model gets wrong" in (run / "report.html").read_text()
    assert main(["report", str(run), "--worst", "0", "--output", str(tmp_path / "none.html")]) == 0
    assert f"{wrong} validation images are wrong; none shown" in (tmp_path / "none.html").read_text()
    # The command and config that made the run, as the run recorded them.
    command = [line for line in (run / "command.txt").read_text().splitlines() if not line.startswith("#")]
    assert page.text["pre.command"].strip() == command[0] and command[0].startswith("crossvit train small_folder ")
    assert page.text["pre.config"] == (run / "config.yaml").read_text()
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert page.text["table.epochs"].count("\n") >= len(epochs)


def test_report_errors_are_one_line(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(run / "config.yaml", partial / "config.yaml")  # stopped before its first checkpoint
    assert main(["report", str(partial)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds no best.pth or last.pth" in err


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(run, tmp_path):
    """Chromium loads the page from disk: every image decodes to its PNG's size and is laid out on the page."""
    assert main(["report", str(run), "--output", str(tmp_path / "report.html"), "--worst", "2"]) == 0
    pngs = [_png(i["src"]).size for i in _parse(tmp_path / "report.html").images]
    probe = ("<script>addEventListener('load', () => { for (const i of document.images) {"
             " const box = i.getBoundingClientRect();"
             " i.dataset.natural = i.complete ? i.naturalWidth + 'x' + i.naturalHeight : 'none';"
             " i.dataset.shown = box.width > 50 && box.height > 50 ? 'yes' : 'no'; } });</script>")
    page = tmp_path / "probe.html"  # the report with a probe added: the report itself has no script
    page.write_text((tmp_path / "report.html").read_text(encoding="utf-8").replace("</body>", probe + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    rendered = re.findall(r'data-natural="([^"]+)" data-shown="([^"]+)"', dom)
    assert [natural for natural, _ in rendered] == [f"{w}x{h}" for w, h in pngs]
    assert all(shown == "yes" for _, shown in rendered)
    for title in ("Training curves", "Accuracy by class", "Confusion matrix", "Most wrong", "Config"):
        assert f">{title}</h2>" in dom


def test_a_run_exports_to_the_hub_layout_with_its_model_card(run, tmp_path, capsys):
    assert main(["export", str(run / "best.pth"), "--format", "hub", "--output", str(tmp_path / "hub")]) == 0
    assert "HfApi().upload_folder" in capsys.readouterr().out
    card = (tmp_path / "hub" / "README.md").read_text()
    command = (run / "command.txt").read_text().splitlines()[1]
    saved = crossvit.read_checkpoint(run / "best.pth").progress
    for field in ("dataset: folder", "recipe: small_folder", f"validation top-1: {saved['best_top1']:.2f}%",
                  f"command: `{command}`"):
        assert field in card, field
    loaded = crossvit.create_model(f"local-dir:{tmp_path / 'hub'}").eval()
    original = crossvit.create_model(checkpoint=str(run / "best.pth")).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


@pytest.mark.parametrize("options", ["model.options.fusion=all_attention", "model.options.fusion=pairwise",
                                     "model.options.cls_token=false"])
def test_every_kind_of_model_gets_its_mistakes_drawn(tmp_path, options):
    """Each fusion's maps where it has attention weights; without a CLS token, the pictures alone."""
    from crossvit.analysis.report import write_report
    from crossvit.training.trainer import train
    from tinyrun import tiny_config

    folder = make_folder_dataset(tmp_path / "data", classes=3, train_per_class=8, val_per_class=6)
    train(tiny_config(folder, *PLAIN, "optim.lr=1e-5", "epochs=1", options), tmp_path / "run")
    page = _parse(write_report(tmp_path / "run", worst=2))
    strips = [_png(i["src"]).size for i in page.images if i["within"] == "figure.mistake"]
    assert len(strips) == 2
    panels = {"fusion=all_attention": 5, "fusion=pairwise": 3, "cls_token=false": 1}[options.split(".")[-1]]
    assert all(width == pytest.approx(panels * 1.6 * 110, abs=2) for width, _ in strips)  # 1.6 inch per panel, 110 dpi
    assert "not recorded" in page.text["pre.command"]  # trained from Python, not by a command

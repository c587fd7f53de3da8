"""`pretrained=True` downloads into torch's hub cache; tested offline against local servers."""

import functools
import http.server
import threading
import urllib.error

import pytest
import torch

import crossvit
from crossvit.model import pretrained as pretrained_module

from conftest import small_config


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def release_file(tmp_path):
    """A small model saved as the authors' release would be: a raw state dict, their key names."""
    torch.manual_seed(3)
    model = small_config()
    serve = tmp_path / "serve"
    serve.mkdir()
    path = serve / "crossvit_small_test_224.pth"
    renames = {"pos_embeds.": "pos_embed.", "cls_tokens.": "cls_token.", "tokenizers.": "patch_embed.",
               "norms.": "norm.", "heads.": "head."}
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in renames.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        key = (key.replace("encoders.", "blocks.").replace(".branches.", ".blocks.")
               .replace(".fusion.project.", ".projs.").replace(".fusion.revert.", ".revert_projs."))
        if ".fusion.attend." in key:
            head, _, tail = key.partition(".fusion.attend.")
            branch, _, rest = tail.split(".", 2)
            rest = {"norm": "norm1", "q": "attn.wq", "k": "attn.wk", "v": "attn.wv", "proj": "attn.proj"}[
                rest.split(".")[0]] + "." + rest.split(".", 1)[1]
            key = f"{head}.fusion.{branch}.{rest}"
        state[key] = value
    torch.save(state, path)
    return model, path


@pytest.fixture
def http_server(release_file):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release_file[1].parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _same_logits(a, b):
    x = torch.randn(2, 3, 32, 32)
    a.eval(), b.eval()
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_download_from_a_local_http_server_into_the_hub_cache(hub_dir, release_file, http_server):
    model, path = release_file
    url = f"{http_server}/{path.name}"
    loaded = small_config(pretrained=True, pretrained_url=url)
    assert _same_logits(loaded, model)
    assert (hub_dir / "checkpoints" / path.name).read_bytes() == path.read_bytes()
    # Second time from the cache: the server may be gone.
    again = small_config(pretrained=True, pretrained_url="http://127.0.0.1:1/" + path.name)
    assert _same_logits(again, model)


def test_download_from_a_file_url(hub_dir, release_file):
    model, path = release_file
    loaded = small_config(pretrained=True, pretrained_url=path.as_uri())
    assert _same_logits(loaded, model)


def test_offline_failure_is_one_clear_line(hub_dir):
    with pytest.raises(crossvit.CrossViTError) as err:
        crossvit.create_model("crossvit_9_240", pretrained=True, pretrained_url="http://127.0.0.1:1/crossvit_9_224.pth")
    message = str(err.value)
    assert "\n" not in message
    assert "could not download the weights of crossvit_9_240 (offline?)" in message
    assert "pass checkpoint=PATH" in message and str(hub_dir) in message


def test_published_urls_are_tried_in_order(hub_dir, monkeypatch):
    """Without a URL the authors' release comes first, timm's copy second (no network used)."""
    tried = []

    def refuse(url, dest, progress=True):
        tried.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(pretrained_module.torch.hub, "download_url_to_file", refuse)
    with pytest.raises(crossvit.CrossViTError, match="offline"):
        crossvit.create_model("crossvit_9_dagger_240", pretrained=True)
    assert tried == [
        "https://github.com/IBM/CrossViT/releases/download/weights-0.1/crossvit_9_dagger_224.pth",
        "https://huggingface.co/timm/crossvit_9_dagger_240.in1k/resolve/main/model.safetensors",
    ]


def test_variants_without_published_weights_say_so():
    with pytest.raises(crossvit.CrossViTError, match="no published weights"):
        crossvit.create_model("crossvit_micro_28", pretrained=True)

"""polab.scaled.checkpoint: layout, Hugging Face folders, safetensors, weights_only state, manifests, old call form."""

import json
import os

import pytest
import torch

from polab.scaled.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


@pytest.fixture(scope="module")
def tiny():
    from polab.scaled.models import load_model

    torch.set_num_threads(1)
    return load_model("tiny-llama", seed=0)


class TiedNet(torch.nn.Module):
    """Two layers sharing one weight (like a tied embedding/output), plus a buffer."""

    def __init__(self, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)
        self.b.weight = self.a.weight
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.register_buffer("count", torch.tensor([seed]))


def _optimizer_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt.state_dict()


def test_pretrained_entry_is_a_folder_transformers_loads(tiny, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = tiny.model, tiny.tokenizer
    ck = save_checkpoint(tmp_path, 7, state={"step": 7}, pretrained={"policy": (model, tok)})
    assert ck == tmp_path / "checkpoints" / "step_00000007"
    names = {p.name for p in (ck / "policy").iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json"} <= names
    assert any(n.endswith(".safetensors") for n in names) and not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    loaded = AutoModelForCausalLM.from_pretrained(ck / "policy")
    tok2 = AutoTokenizer.from_pretrained(ck / "policy")
    ids = torch.tensor([tok.encode("Alice says Bob is a knave.")])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)  # same weights, same float32 arithmetic: bitwise
    assert tok2.encode("Alice says Bob is a knave.") == tok.encode("Alice says Bob is a knave.")
    assert loaded.generation_config.pad_token_id == model.generation_config.pad_token_id


def test_load_fills_modules_in_place_and_returns_the_state(tiny, tmp_path):
    from polab.scaled.models import load_model

    model = tiny.model
    net = TiedNet(1)
    state = {"step": 3, "optimizer": _optimizer_state(net), "rng": torch.random.get_rng_state(),
             "config": {"levels": (3, 4), "lr": 1e-3, "name": "x", "none": None}, "history": [1.5, 2.5]}
    ck = save_checkpoint(tmp_path, 3, state=state, models={"critic": net}, pretrained={"policy": (model, None)})
    other = load_model("tiny-llama", seed=1).model  # different initial weights
    net2 = TiedNet(2)
    got = load_checkpoint(ck, models={"critic": net2}, pretrained={"policy": other})
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(net2.a.weight, net.a.weight) and net2.b.weight is net2.a.weight  # tie kept
    assert torch.equal(net2.count, net.count)
    assert got["config"] == state["config"] and got["history"] == state["history"]
    assert torch.equal(got["rng"], state["rng"])
    assert torch.equal(got["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])
    # the trainer state is plain data: torch's safe loader reads it
    assert torch.load(ck / "trainer_state.pt", weights_only=True)["step"] == 3


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    import hashlib

    ck = save_checkpoint(tmp_path, 1, state={"x": torch.arange(5)}, models={"net": TiedNet(0)})
    manifest = json.loads((ck / "manifest.json").read_text())
    files = sorted(p.relative_to(ck).as_posix() for p in ck.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == files == ["net.safetensors", "trainer_state.pt"]
    for rel, info in manifest["files"].items():
        data = (ck / rel).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["step"] == 1 and manifest["models"] == ["net"] and manifest["pretrained"] == []
    assert verify_checkpoint(ck) == manifest


def test_old_positional_call_form_still_works(tmp_path):
    net = TiedNet(0)
    state = {"step": 2, "model": net.state_dict(), "optimizer": _optimizer_state(net)}
    ck = save_checkpoint(tmp_path, 2, state, keep=2)
    assert latest_checkpoint(tmp_path) == ck
    got = load_checkpoint(ck)
    net2 = TiedNet(5)
    net2.load_state_dict(got["model"])
    assert torch.equal(net2.a.weight, net.a.weight) and got["step"] == 2


@pytest.mark.parametrize("bad, where", [
    ({"x": __import__("numpy").zeros(2)}, "state['x']"),
    ({"a": [1, {"b": object()}]}, "state['a'][1]['b']"),
    ({"opt": torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)}, "state['opt']"),
])
def test_state_that_would_need_code_to_load_is_refused_before_writing(tmp_path, bad, where):
    with pytest.raises(TypeError) as err:
        save_checkpoint(tmp_path, 1, state=bad)
    assert where in str(err.value) and "weights_only=True" in str(err.value)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("kw, msg", [
    (dict(step=-1, state={}), "step must be"),
    (dict(step=1, state={}, keep=-1), "keep must be"),
    (dict(step=1, state={}, models={"../x": torch.nn.Linear(1, 1)}), "plain file name"),
    (dict(step=1, state={}, models={"trainer_state.pt": torch.nn.Linear(1, 1)}), "plain file name"),
])
def test_bad_arguments_are_named(tmp_path, kw, msg):
    step = kw.pop("step")
    with pytest.raises(ValueError, match=msg):
        save_checkpoint(tmp_path, step, **kw)


def test_asking_for_an_entry_the_checkpoint_lacks_or_a_wrong_shape(tmp_path):
    ck = save_checkpoint(tmp_path, 1, state={}, models={"net": TiedNet(0)})
    with pytest.raises(CheckpointError, match="no models entry"):
        load_checkpoint(ck, models={"critic": TiedNet(0)})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(ck, models={"net": torch.nn.Linear(3, 3)})


def test_checkpoint_path_by_step(tmp_path):
    save_checkpoint(tmp_path, 4, state={"s": 4}, keep=0)
    save_checkpoint(tmp_path, 8, state={"s": 8}, keep=0)
    assert load_checkpoint(checkpoint_path(tmp_path, 4))["s"] == 4
    with pytest.raises(CheckpointError, match=r"no checkpoint of step 5 \(steps there: 4, 8\)"):
        checkpoint_path(tmp_path, 5)


def test_same_step_saved_again_replaces_it_atomically(tmp_path):
    save_checkpoint(tmp_path, 1, state={"v": 1})
    ck = save_checkpoint(tmp_path, 1, state={"v": 2})
    assert load_checkpoint(ck)["v"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["history.json", "latest", "step_00000001"]


def test_old_format_checkpoint_loads_safely_with_a_warning(tmp_path):
    ck = tmp_path / "checkpoints" / "step_00000003"
    ck.mkdir(parents=True)
    torch.save({"step": 3, "w": torch.ones(2)}, ck / "state.pt")
    (tmp_path / "checkpoints" / "latest").write_text("step_00000003\n")
    assert latest_checkpoint(tmp_path) == ck
    with pytest.warns(UserWarning, match="cannot be verified"):
        assert load_checkpoint(ck)["step"] == 3


def test_no_weights_only_false_anywhere_in_polab():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    offenders = []
    for top in ("scaled", "estimators", "theory", "proofs_checks", "polab"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for f in files:
                if f.endswith(".py"):
                    text = open(os.path.join(dirpath, f)).read()
                    if "weights_only=False" in text.replace(" ", ""):
                        offenders.append(os.path.join(dirpath, f))
    assert offenders == []

"""polab export: a checkpoint's policy as a Hugging Face folder that transformers loads; clean refusals (exit 2)."""

import json

import pytest
import torch

from polab.scaled.checkpoint import save_checkpoint
from polab.scaled.export import export_checkpoint, main


@pytest.fixture(scope="module")
def tiny():
    from polab.scaled.models import load_model

    torch.set_num_threads(1)
    return load_model("tiny-llama", seed=0)


def _perturbed(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_export_latest_and_by_step_load_with_transformers(tiny, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = tiny.model, tiny.tokenizer
    ids = torch.tensor([tok.encode("2 + 3 =")])
    run = tmp_path / "run"
    saved = {}
    for step in (2, 4):
        _perturbed(model, step)
        saved[step] = _logits(model, ids)
        save_checkpoint(run, step, state={"step": step}, pretrained={"policy": (model, tok)})
    assert main([str(run), "--out", str(tmp_path / "latest")]) == 0
    assert main([str(run), "--out", str(tmp_path / "two"), "--step", "2"]) == 0
    assert "exported policy to" in capsys.readouterr().out
    for name, step in (("latest", 4), ("two", 2)):
        d = tmp_path / name
        loaded = AutoModelForCausalLM.from_pretrained(d)
        assert torch.equal(_logits(loaded, ids), saved[step])  # the same float32 weights: bitwise equal logits
        assert AutoTokenizer.from_pretrained(d).encode("2 + 3 =") == tok.encode("2 + 3 =")
        record = json.loads((d / "polab_export.json").read_text())
        assert record["step"] == step and record["from"] == "pretrained entry" and "model.safetensors" in record["files"]
    assert not torch.equal(saved[2], saved[4])


def test_export_of_an_older_checkpoint_with_weights_in_the_trainer_state(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    from polab.scaled.models import load_model

    model = load_model("tiny-llama", seed=3).model
    weights = _perturbed(model, 11)
    run = tmp_path / "run"
    save_checkpoint(run, 5, {"step": 5, "model": weights, "config": {"model": "tiny-llama", "seed": 3}}, keep=2)
    out = export_checkpoint(run, tmp_path / "exp")
    loaded = AutoModelForCausalLM.from_pretrained(out)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, weights[k]), k
    assert json.loads((out / "polab_export.json").read_text())["from"].startswith("trainer state")


def test_refusals_exit_2_with_the_problem_named(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    save_checkpoint(run, 1, state={"step": 1}, models={"critic": torch.nn.Linear(2, 2)})
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        ([str(run), "--out", str(full)], "is not empty"),
        ([str(run), "--out", ""], "--out is empty"),
        ([str(run), "--out", str(afile / "sub")], "is a file"),
        ([str(tmp_path / "nothing"), "--out", str(tmp_path / "o1")], "does not exist"),
        ([str(full), "--out", str(tmp_path / "o2")], "has no checkpoint"),
        ([str(run), "--out", str(tmp_path / "o3"), "--step", "7"], "no checkpoint of step 7"),
        ([str(run), "--out", str(tmp_path / "o4"), "--step", "-1"], "--step must be"),
        ([str(run), "--out", str(tmp_path / "o5")], "holds no model 'policy'"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("polab export: error:") and msg in err and "Traceback" not in err, (argv, err)
    assert (full / "keep.txt").read_text() == "mine" and sorted(p.name for p in full.iterdir()) == ["keep.txt"]
    assert not any(p.name.startswith(".o") for p in tmp_path.iterdir())  # no temporaries left behind


def test_damaged_checkpoint_is_not_exported(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    ck = save_checkpoint(run, 1, state={}, pretrained={"policy": (tiny.model, tiny.tokenizer)})
    f = ck / "policy" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    assert main([str(run), "--out", str(tmp_path / "o"), "--step", "1"]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "o").exists()

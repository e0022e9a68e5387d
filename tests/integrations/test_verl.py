"""DumpCurriculumSampler against verl's curriculum interface, as verl 0.7.1's own source defines and calls it.

verl cannot be imported here (``import verl`` needs ray), so the test reads verl's wheel, which
``.ci/setup.sh`` downloads with ``pip download --no-deps verl==0.7.1`` into ``$VENV/wheels`` (no network at
test time; ``POLAB_VERL_WHEEL`` points elsewhere). It executes ``verl/experimental/dataset/sampler.py``
with its two imports (``DataProto``, ``DictConfig``, used only in annotations) replaced by stand-ins, so
the abstract classes are verl's own, and it checks with ``ast`` how ``main_ppo.py`` constructs the sampler
and how ``ray_trainer.py`` calls ``update``. The data loader is torchdata's ``StatefulDataLoader``, as in
verl (``ray_trainer.py``, ``_create_dataloader``).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import io
import os
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("torchdata", reason="torchdata is not installed: pip install -e '.[integrations]'")

from polab.integrations.verl import VERL_INTERFACE_VERSION, DumpSamplerCore, verl_sampler_class  # noqa: E402

SAMPLER = "verl/experimental/dataset/sampler.py"
MAIN_PPO = "verl/trainer/main_ppo.py"
RAY_TRAINER = "verl/trainer/ppo/ray_trainer.py"
IMPORT_UTILS = "verl/utils/import_utils.py"
SOURCES = ("kk_3", "kk_4", "kk_5")


def _wheel() -> Path:
    default = Path(sys.prefix) / "wheels" / f"verl-{VERL_INTERFACE_VERSION}-py3-none-any.whl"
    path = Path(os.environ.get("POLAB_VERL_WHEEL", default))
    if not path.is_file():
        pytest.skip(
            f"verl's wheel is not at {path}: run .ci/setup.sh, or `pip download --no-deps "
            f"verl=={VERL_INTERFACE_VERSION} -d {path.parent}`"
        )
    return path


@pytest.fixture(scope="module")
def verl_source() -> dict[str, str]:
    with zipfile.ZipFile(_wheel()) as z:
        return {name: z.read(name).decode() for name in (SAMPLER, MAIN_PPO, RAY_TRAINER, IMPORT_UTILS)}


@pytest.fixture(scope="module")
def verl_classes(verl_source):
    """verl's AbstractSampler / AbstractCurriculumSampler, executed from verl's source file."""
    tree = ast.parse(verl_source[SAMPLER])
    stubbed = {}
    body = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module in ("verl", "omegaconf"):
            stubbed[node.module] = sorted(a.name for a in node.names)
            continue
        body.append(node)
    # Exactly these two names are replaced; anything else verl imports there must really import.
    assert stubbed == {"verl": ["DataProto"], "omegaconf": ["DictConfig"]}
    tree.body = body
    ns = {"__name__": "verl_sampler_under_test", "DataProto": type("DataProto", (), {}), "DictConfig": dict}
    exec(compile(tree, SAMPLER, "exec"), ns)
    return ns["AbstractSampler"], ns["AbstractCurriculumSampler"]


def _dataset(per_source: int = 4):
    from datasets import Dataset

    rows = [{"prompt": f"{s}-{i}", "data_source": s} for s in SOURCES for i in range(per_source)]
    return Dataset.from_list(rows)


def _config(**sampler):
    # verl's data config (verl/trainer/config/data/legacy_data.yaml): seed, dataloader_num_workers and
    # the sampler section with class_path / class_name; polab's options are added beside them.
    section = {"class_path": "pkg://polab.integrations.verl", "class_name": "DumpCurriculumSampler", **sampler}
    return {"seed": 3, "dataloader_num_workers": 0, "sampler": section}


def _batch(rows, *, rng: np.random.Generator, n: int = 2, length: int = 5):
    """A verl-like batch after compute_advantage: n responses per prompt, token advantages on response tokens."""
    sources = np.array([r["data_source"] for r in rows for _ in range(n)], dtype=object)
    scores = rng.normal(size=len(sources))
    groups = scores.reshape(-1, n)
    seq_adv = ((groups - groups.mean(1, keepdims=True)) / (groups.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1)
    lengths = rng.integers(1, length + 1, size=len(sources))
    mask = torch.tensor(np.arange(length)[None, :] < lengths[:, None], dtype=torch.int64)
    # Token-varying part (as GAE would give) so that the per-response reduction matters.
    tokens = seq_adv[:, None] + 0.1 * rng.normal(size=(len(sources), length))
    adv = torch.tensor(tokens, dtype=torch.float32) * mask
    return SimpleNamespace(batch={"advantages": adv, "response_mask": mask}, non_tensor_batch={"data_source": sources})


def _loader(sampler, dataset, batch_size=3):
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0, drop_last=True,
                              collate_fn=list)


# -- the interface as verl defines it ---------------------------------------------------------------
def test_subclasses_verls_abstract_classes(verl_classes):
    AbstractSampler, AbstractCurriculumSampler = verl_classes
    assert issubclass(AbstractCurriculumSampler, AbstractSampler)
    assert issubclass(AbstractSampler, torch.utils.data.Sampler)
    abstract = {
        name
        for klass in (AbstractSampler, AbstractCurriculumSampler)
        for name, member in vars(klass).items()
        if getattr(member, "__isabstractmethod__", False)
    }
    assert abstract == {"__init__", "update"}
    cls = verl_sampler_class(base=AbstractCurriculumSampler)
    for name in abstract:  # every abstract method is implemented, with verl's parameter names
        assert not getattr(getattr(cls, name), "__isabstractmethod__", False)
        ours = list(inspect.signature(getattr(cls, name)).parameters)
        theirs = list(inspect.signature(getattr(AbstractCurriculumSampler, name)).parameters)
        assert ours == theirs, name
    assert cls.__name__ == "DumpCurriculumSampler" and cls.__module__ == "polab.integrations.verl"


def _calls(tree):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _dotted(node) -> str:
    return ast.unparse(node)


def test_constructed_and_updated_as_verl_calls_it(verl_source, verl_classes):
    AbstractSampler, AbstractCurriculumSampler = verl_classes
    main = ast.parse(verl_source[MAIN_PPO])
    loads = [c for c in _calls(main) if _dotted(c.func) == "load_extern_object"]
    assert [[_dotted(a) for a in c.args] for c in loads] == [
        ["data_config.sampler.class_path", "data_config.sampler.class_name"]
    ]
    # The loaded class is called with exactly these keywords and no positional argument.
    made = [c for c in _calls(main) if _dotted(c.func) == "curriculum_class"]
    assert len(made) == 1 and not made[0].args
    assert {k.arg: _dotted(k.value) for k in made[0].keywords} == {"data_source": "dataset", "data_config": "data_config"}
    asserts = [_dotted(n.test) for n in ast.walk(main) if isinstance(n, ast.Assert)]
    assert "isinstance(sampler, AbstractSampler)" in asserts
    trainer = ast.parse(verl_source[RAY_TRAINER])
    updates = [c for c in _calls(trainer) if _dotted(c.func).endswith("sampler.update")]
    assert [(_dotted(c.func), [k.arg for k in c.keywords], c.args) for c in updates] == [
        ("self.train_dataloader.sampler.update", ["batch"], [])
    ]
    assert any(
        _dotted(c) == "isinstance(self.train_dataloader.sampler, AbstractCurriculumSampler)" for c in _calls(trainer)
    )
    # Now do what those lines do.
    cls = verl_sampler_class(base=AbstractCurriculumSampler)
    sampler = cls(data_source=_dataset(), data_config=_config())
    assert isinstance(sampler, AbstractSampler) and isinstance(sampler, AbstractCurriculumSampler)
    loader = _loader(sampler, _dataset())
    rows = next(iter(loader))
    loader.sampler.update(batch=_batch(rows, rng=np.random.default_rng(0)))
    assert sampler.scheduler.num_updates == 1 and int(sampler.scheduler.counts.sum()) == 2 * len(rows)


def test_loaded_by_verls_own_loader(verl_source, verl_classes, monkeypatch):
    """verl's load_extern_object (stdlib-only module, executed from the wheel) finds the class by name.

    The class is built on first access by ``from verl.experimental.dataset.sampler import
    AbstractCurriculumSampler``; that module is provided here from verl's source (verl itself needs ray).
    """
    import types

    import polab.integrations.verl as module

    ns = {"__name__": "verl_import_utils_under_test"}
    exec(compile(verl_source[IMPORT_UTILS], IMPORT_UTILS, "exec"), ns)
    fake = types.ModuleType("verl.experimental.dataset.sampler")
    fake.AbstractSampler, fake.AbstractCurriculumSampler = verl_classes
    for name in ("verl", "verl.experimental", "verl.experimental.dataset"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "verl.experimental.dataset.sampler", fake)
    try:
        cls = ns["load_extern_object"]("pkg://polab.integrations.verl", "DumpCurriculumSampler")
        sampler = cls(data_source=_dataset(), data_config=_config())
        assert isinstance(sampler, verl_classes[1]) and cls is module.DumpCurriculumSampler
    finally:
        vars(module).pop("DumpCurriculumSampler", None)  # built against the stand-in module: do not keep it


# -- behaviour ---------------------------------------------------------------------------------------
def test_draws_follow_the_scheduler_at_each_draw_and_update_feeds_token_means():
    data = _dataset()
    sampler = DumpSamplerCore(data, _config(bonus="paper"))  # seen distributions get probability 0
    assert sampler.scheduler.names == SOURCES and len(sampler) == len(data)
    rng = np.random.default_rng(1)
    loader = _loader(sampler, data, batch_size=2)
    saw_zero = False
    fed = {s: [] for s in SOURCES}
    for _ in range(2):  # two epochs
        for rows in loader:
            p_before = sampler.scheduler.probabilities()  # num_workers=0: this batch was drawn with these
            drawn = [SOURCES.index(r["data_source"]) for r in rows]
            assert (p_before[drawn] > 0).all()
            saw_zero |= bool((p_before == 0).any())
            batch = _batch(rows, rng=rng)
            sampler.update(batch)
            mask = batch.batch["response_mask"].bool()
            for i, s in enumerate(batch.non_tensor_batch["data_source"]):
                fed[s].append(batch.batch["advantages"][i][mask[i]].double().mean().item())  # loop reference
    assert saw_zero
    windows = sampler.scheduler.state_dict()["windows"]
    for j, s in enumerate(SOURCES):
        np.testing.assert_allclose(windows[j], fed[s], rtol=1e-12, atol=0)  # float64 means of float32 tokens
    assert sampler.scheduler.num_updates == 2 * (len(data) // 2)


def test_resume_through_stateful_dataloader_is_exact():
    def run(*, epochs, stop_at=None, resume=None):
        data = _dataset()
        sampler = DumpSamplerCore(data, _config())
        loader = _loader(sampler, data)
        step = 0
        if resume is not None:
            state, step = resume
            loader.load_state_dict(state)
        drawn = []
        for _epoch in range(epochs):
            for rows in loader:
                drawn.append([r["prompt"] for r in rows])
                sampler.update(batch=_batch(rows, rng=np.random.default_rng([5, step])))
                step += 1
                if step == stop_at:
                    buf = io.BytesIO()
                    torch.save(loader.state_dict(), buf)  # verl writes it with torch.save (data.pt)
                    buf.seek(0)
                    return drawn, sampler, (torch.load(buf, weights_only=True), step)
        return drawn, sampler, None

    full, full_sampler, _ = run(epochs=2)
    stop = len(_dataset()) // 3 + 1  # one step into the second epoch (batches of 3, drop_last)
    head, _, saved = run(epochs=2, stop_at=stop)
    tail, resumed, _ = run(epochs=1, resume=saved)
    assert len(head) == stop and head + tail == full
    assert resumed.scheduler.state_dict() == full_sampler.scheduler.state_dict()
    assert torch.equal(resumed.generator.get_state(), full_sampler.generator.get_state())


def test_bad_configuration_is_refused():
    data = _dataset()
    with pytest.raises(ValueError, match=r"unknown keys \['temprature'\]"):
        DumpSamplerCore(data, _config(temprature=0.2))
    with pytest.raises(ValueError, match="source_key 'task' is not a column"):
        DumpSamplerCore(data, _config(source_key="task"))
    with pytest.raises(ValueError, match=r"\['kk_9'\] have no rows"):
        DumpSamplerCore(data, _config(names=[*SOURCES, "kk_9"]))
    sampler = DumpSamplerCore(data, _config(temperature=0.5, window=10, seed=None))
    assert sampler.scheduler.temperature == 0.5 and sampler.scheduler.window == 10 and sampler.seed == 3
    bad = SimpleNamespace(batch={"advantages": torch.zeros(1, 2), "response_mask": torch.ones(1, 2)},
                          non_tensor_batch={"uid": np.array(["x"], dtype=object)})
    with pytest.raises(ValueError, match="no 'data_source'"):
        sampler.update(bad)


def test_import_does_not_load_verl():
    import polab.integrations.verl as module

    assert "verl" not in sys.modules
    if importlib.util.find_spec("verl") is None:
        with pytest.raises(ImportError, match=f"verl=={VERL_INTERFACE_VERSION}"):
            module.DumpCurriculumSampler

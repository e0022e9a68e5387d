"""`polab run martingale-pe` end to end with small settings: run folder, figures, and the LQ error against Lyapunov.

Tolerance of the LQ check (derived in scaled/experiments/martingale_pe.py):
each coefficient of each closed-form fit is within z SE of its Euler-chain
value, z Bonferroni over every coefficient of every fit at alpha = 0.01, so
with probability >= 0.99 under any seed every ``max_z_target <= z`` and every
``err_true <= tol_true`` (tol_true adds the exact Euler-chain bias and, for ML,
the exact truncation term to z SE and propagates to the value function).
"""

import json
import math

import pytest
import torch

from polab.scaled.cli import main as cli_main
from polab.scaled.experiments.martingale_pe import ESTIMATORS, WITH_TOLERANCE, quadratic_features
from polab.scaled.run_folder import read_metrics

pytest.importorskip("gymnasium")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _run(tmp_path, *extra):
    out = tmp_path / "run"
    rc = cli_main(["run", "martingale-pe", "--quick", "--dim", "2", "--device", "cpu", "--out", str(out), *extra])
    assert rc == 0
    return out


def test_quick_run_writes_a_complete_run_folder_and_matches_lyapunov(tmp_path):
    out = _run(tmp_path)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quick"] is True and cfg["dim"] == 2 and cfg["parts"] == ["lq", "pendulum"]
    rows = read_metrics(out / "metrics.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"] == "cpu"
    for name in ("error_vs_mesh.png", "error_vs_paths.png", "errors_per_estimator.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    lq = [r for r in rows if r["part"] == "lq"]
    pend = [r for r in rows if r["part"] == "pendulum"]
    # quick sizes: meshes (0.2, 0.1) + paths (300, 600) = 4 LQ jobs, 9 estimators each; Pendulum 2 + 2 jobs
    assert len(lq) == 4 * len(ESTIMATORS) and len(pend) == 4 * len(ESTIMATORS)
    assert {r["estimator"] for r in lq} == set(ESTIMATORS) and set(summary["errors"]["lq"]) == set(ESTIMATORS)
    z = summary["lq"]["z"]
    checked = 0
    for r in lq:
        assert math.isfinite(r["err_true"]) and math.isfinite(r["err_target"])
        if r["estimator"] in WITH_TOLERANCE:
            assert r["max_z_target"] <= z, r
            assert r["err_true"] <= r["tol_true"], r
            checked += 1
    assert checked == 4 * len(WITH_TOLERANCE)
    lstd = {r["mesh"]: r for r in lq if r["sweep"] == "mesh" and r["estimator"] == "lstd0"}
    assert set(lstd) == {0.2, 0.1}
    for r in pend:
        assert math.isfinite(r["err_true"]) and r["err_true"] >= 0
        assert math.isnan(r["err_target"])  # a discrete environment: only the Monte Carlo reference
    assert summary["pendulum"]["dt"] == 0.05
    assert summary["pendulum"]["reference_rel_se"] < 0.1


def test_neural_only_at_higher_dimension(tmp_path):
    out = tmp_path / "run"
    rc = cli_main(["run", "martingale-pe", "--quick", "--parts", "lq", "--dim", "30", "--no-quadratic", "--no-online",
                   "--meshes", "0.2", "--path-counts", "100", "--device", "cpu", "--out", str(out)])
    assert rc == 0
    rows = read_metrics(out / "metrics.csv")
    assert {r["estimator"] for r in rows} == {"neural_ml", "neural_td0"}
    assert all(math.isfinite(r["err_true"]) for r in rows)


def test_quadratic_features_reproduce_a_quadratic_form():
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    phi = quadratic_features(x)
    # order (0,0), (0,1), (0,2), (1,1), (1,2), (2,2), 1
    torch.testing.assert_close(phi, torch.tensor([[1.0, 2.0, -1.0, 4.0, -2.0, 1.0, 1.0]], dtype=torch.float64), rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_lq_run_on_cuda(tmp_path):
    out = tmp_path / "run"
    rc = cli_main(["run", "martingale-pe", "--quick", "--parts", "lq", "--dim", "2", "--device", "cuda", "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cuda")
    rows = read_metrics(out / "metrics.csv")
    assert all(r["err_true"] <= r["tol_true"] for r in rows if r["estimator"] in WITH_TOLERANCE)


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["run", "martingale-pe", "--parts", "bogus", "--out", str(tmp_path)])


def test_quadratic_head_represents_a_quadratic_value_exactly_and_linear_head_is_the_plain_mlp():
    from polab.scaled.experiments.martingale_pe import ValueMLP

    g = torch.Generator().manual_seed(0)
    d, hidden = 3, 5
    M = torch.randn((d, d), generator=g, dtype=torch.float64)
    P = M + M.T  # indefinite: both signs of the head are needed
    lam, vec = torch.linalg.eigh(P)
    net = ValueMLP(d, hidden, head="quadratic")
    with torch.no_grad():
        net.linear.weight.zero_()
        net.linear.bias.fill_(-1.5)
        net.directions.weight.zero_()
        net.directions.weight[:, :d] = lam.abs().sqrt()[:, None] * vec.T  # rows sqrt|lam_j| v_j
        net.signs.copy_(torch.sign(lam))
    x = torch.randn((4, 7, d), generator=g, dtype=torch.float64)
    want = torch.einsum("pti,ij,ptj->pt", x, P, x) - 1.5
    torch.testing.assert_close(net(None, x), want, rtol=1e-10, atol=1e-12)  # float64 round-off
    # at initialisation the quadratic part is off (signs = 0): the output is linear in (x, MLP(x))
    fresh = ValueMLP(d, hidden, head="quadratic")
    h = torch.cat([x, fresh.body(x)], -1)
    torch.testing.assert_close(fresh(None, x), fresh.linear(h).squeeze(-1), rtol=0, atol=0)
    plain = ValueMLP(d, hidden)
    assert plain(None, x).shape == (4, 7) and not hasattr(plain, "signs")
    with pytest.raises(ValueError, match="head"):
        ValueMLP(d, hidden, head="cubic")

"""cost.plan: the plan grammar ^(ppN)?(tpN)?(epN)?(xN)?$, its canonical name and GPU counts."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moelab.cost.plan import Plan
from moelab.cost.roofline import Workload
from moelab.errors import MoelabError
from moelab.limits import MAX_GPUS


@pytest.mark.parametrize("text,pp,tp,ep,x", [
    ("tp8", 1, 8, 1, 1), ("ep8", 1, 1, 8, 1), ("tp2ep4", 1, 2, 4, 1), ("pp2tp8", 2, 8, 1, 1),
    ("tp2x4", 1, 2, 1, 4), ("pp2tp2ep2x2", 2, 2, 2, 2), ("x3", 1, 1, 1, 3), ("TP4", 1, 4, 1, 1),
    (" tp2 ", 1, 2, 1, 1), ("tp1", 1, 1, 1, 1),
])
def test_parse(text, pp, tp, ep, x):
    plan = Plan.parse(text)
    assert (plan.pp, plan.tp, plan.ep, plan.replicas) == (pp, tp, ep, x)
    assert plan.gpus_per_replica == pp * tp * ep
    assert plan.gpus == pp * tp * ep * x
    assert plan.replica == Plan(pp=pp, tp=tp, ep=ep)


@pytest.mark.parametrize("text", ["", "tp", "tp0", "xx", "ep2tp4", "x2tp2", "tp2tp2", "tp-2", "tp2.5", "8",
                                  "tp 2", "dp2", "ep0", "x0", "pp0tp2"])
def test_refused(text):
    with pytest.raises(MoelabError):
        Plan.parse(text)


@pytest.mark.parametrize("value", [None, 8, ["tp2"]])
def test_non_text_refused(value):
    with pytest.raises(MoelabError):
        Plan.parse(value)


@pytest.mark.parametrize("kwargs", [dict(tp=0), dict(ep=-1), dict(pp=True), dict(replicas=1.5),
                                    dict(tp=MAX_GPUS, replicas=2)])
def test_bad_degrees_refused(kwargs):
    with pytest.raises(MoelabError):
        Plan(**kwargs)


degrees = st.integers(1, 8)


@given(pp=degrees, tp=degrees, ep=degrees, x=degrees)
def test_name_round_trips(pp, tp, ep, x):
    plan = Plan(pp=pp, tp=tp, ep=ep, replicas=x)
    assert Plan.parse(plan.name) == plan
    assert str(plan) == plan.name
    for key, value in (("pp", pp), ("ep", ep), ("x", x)):
        assert (f"{key}{value}" in plan.name) == (value > 1)
    assert plan.gpus == pp * tp * ep * x


def test_canonical_names():
    assert Plan().name == "tp1"
    assert Plan.parse("pp1tp1ep1x1").name == "tp1"
    assert Plan.parse("tp1x4").name == "tp1x4"
    assert Plan.parse("ep4").name == "ep4"


def test_workload_plans():
    assert Workload(gpus=8, plan="tp").parallel == Plan(tp=8)
    assert Workload(gpus=8, plan="ep").parallel == Plan(ep=8)
    assert Workload(gpus=8, plan="tp2x4").parallel == Plan(tp=2, replicas=4)
    with pytest.raises(MoelabError):
        Workload(gpus=4, plan="tp8")  # --gpus contradicts the plan
    with pytest.raises(MoelabError):
        Workload(gpus=2, plan="tq2")

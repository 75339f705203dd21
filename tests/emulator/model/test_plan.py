"""Start order from the references between services, as Railway orders a batch deploy (railway.md §4.1)."""

from pathlib import Path

from emulator.model.plan import BuildError, ServicePlan, start_order


def plan(name: str, *depends_on: str, service: str | None = None) -> ServicePlan:
    return ServicePlan(name=name, kind="app", argv=("true",), env={"RAILWAY_SERVICE_NAME": service or name},
                       cwd=Path("/"), port=1, depends_on=depends_on)


def test_each_service_starts_after_the_ones_it_references():
    plans = {"worker.1": plan("worker.1", "web", "Postgres", service="worker"),
             "worker.2": plan("worker.2", "web", "Postgres", service="worker"),
             "web": plan("web", "Postgres"), "Postgres": plan("Postgres"), "replay": plan("replay")}
    assert start_order(plans) == [["Postgres", "replay"], ["web"], ["worker.1", "worker.2"]]


def test_a_cycle_starts_together_as_railway_deploys_it_in_parallel():
    plans = {"a": plan("a", "b"), "b": plan("b", "a"), "c": plan("c")}
    assert start_order(plans) == [["c"], ["a", "b"]]


def test_a_reference_to_a_failed_or_missing_service_does_not_hold_anything_back():
    plans = {"web": plan("web", "Postgres", "gone"), "Postgres": BuildError("Postgres: broken")}
    assert start_order(plans) == [["web"]]

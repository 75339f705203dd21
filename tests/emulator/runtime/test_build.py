"""The Building step carries out the model's plans: what it writes, what it leaves, what a failure leaves."""

import json
import os
from pathlib import Path


from emulator.model.plan import BuildError, ServicePlan
from emulator.model.planner import plan_stack
from emulator.model.stack import load_stack
from emulator.runtime.build import build_stack, remove_homes
from emulator.runtime.secrets import secret_store
# The planner's tests plan the same copy of the deployment files, in a state dir per module.
from tests.emulator.model.test_planner import ROOT, SHIPPED, repo, state  # noqa: F401 (fixtures)


def planned(repo: Path, state: Path, variant: str | None = None) -> dict[str, ServicePlan | BuildError]:
    return plan_stack(load_stack(SHIPPED, variant), repo, state, secret=secret_store(state))


def test_the_build_carries_out_the_plan(repo, state):
    plans_before = planned(repo, state, "railpack-json-without-git")
    plans = build_stack(plans_before, repo, state)
    try:
        assert list(plans) == list(plans_before)  # the planner's order, for the start order and the logs
        web, worker = plans["web"], plans["worker"]
        assert web.build is None and web.argv and web.cwd == plans_before["web"].cwd
        assert (Path(web.cwd) / "Procfile").is_file()
        assert Path(web.env["HOME"]) == plans_before["web"].build.home and Path(web.env["HOME"], ".profile").is_file()
        # The service's files overlay is in its own app directory only.
        overlay = json.loads((Path(worker.cwd) / "railpack.json").read_text())
        assert overlay == {"deploy": {"aptPackages": ["ffmpeg"]}}
        assert (Path(web.cwd) / "railpack.json").read_text() == (repo / "railpack.json").read_text()
        # PATH: the image's venv, the deployment's own bin (its apt-get stand-in), the host's tools it has.
        venv, own, runtime = worker.env["PATH"].split(os.pathsep)
        assert (Path(own) / "apt-get").is_file() and Path(own).is_relative_to(Path(worker.env["HOME"]))
        assert (Path(venv) / "python").exists() and (Path(runtime) / "bash").exists()
        assert Path(web.env["SSL_CERT_FILE"]).is_file()  # the edge's trust bundle, written by the build
        postgres = plans["Postgres"]
        assert Path(postgres.argv[0]).name == "postgres" and Path(postgres.cwd).is_dir()
        # The model's variables, ports and ids are the ones that run.
        assert {k: v for k, v in web.env.items() if k in plans_before["web"].env and k != "HOME"} == \
            {k: v for k, v in plans_before["web"].env.items() if k != "HOME"}
    finally:
        remove_homes(state, plans)


def test_a_failed_build_is_that_services_failure_and_the_others_are_built(repo, state):
    (repo / "Procfile").unlink()  # web has no start command; the worker has its own
    before = planned(repo, state)
    plans = build_stack(before, repo, state)
    try:
        assert str(plans["web"]) == ("No start command detected. Specify a start command: "
                                     "https://railpack.com/config/file#deploy")
        assert not Path(before["web"].cwd).exists()  # nothing of the failed build is left to run
        assert isinstance(plans["worker"], ServicePlan) and Path(plans["worker"].cwd).is_dir()
    finally:
        remove_homes(state, plans)


def test_building_one_service_leaves_the_others_alone(repo, state):
    """A redeploy, or `run`, builds only the service it is for."""
    before = planned(repo, state, "worker-replicas")
    replicas = {name: plan for name, plan in before.items() if name.startswith("worker.")}
    plans = build_stack(replicas, repo, state)
    try:
        assert sorted(plans) == ["worker.1", "worker.2"]
        assert plans["worker.1"].cwd != plans["worker.2"].cwd and Path(plans["worker.2"].cwd).is_dir()
        assert not Path(before["web"].cwd).exists() and not before["web"].build.home.exists()
    finally:
        remove_homes(state, plans)

"""`python -m emulator`: a repository's Railway project, run locally the way Railway runs it.

`up` builds and deploys every service of the stack file (default: railway.stack.toml of this checkout),
then runs its [[steps]] (e.g. deploy the flows from a snapshot of the working tree, run one, check the
data). `down` stops it, `status` shows it, `logs` and `run` look inside, `reset` wipes the data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from emulator.errors import EmulatorError, StackError
from emulator.model.stack import list_variants
from emulator.project import LOCAL_DRAINING_SECONDS, Project, UpOptions, find_stack_file
from emulator.state import STACK_FILE

_DETACH_TIMEOUT = 900.0
_DEPLOY_TIMEOUT = 900.0


def build_parser(stack_file: Path | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, help="the repository the services are built from (default: the "
                                                  "stack file's directory)")
    parser.add_argument("--stack", type=Path, help="the stack file, inside the repository or not (default: "
                                                   "railway.stack.toml in --repo, else in this directory or "
                                                   "the nearest parent)")
    parser.add_argument("--state-dir", type=Path, help="where logs, volumes and the source snapshot live "
                                                       "(default: .emulator/ beside the stack file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="deploy every service, then run the stack's steps",
                        description="Deploy every service of the stack and keep them running until Ctrl-C. Once "
                                    "they are Active: snapshot the working tree into a local git repository "
                                    "and run the stack file's [[steps]] in order, each until its condition "
                                    "holds.",
                        epilog=_variants_help(stack_file), formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--variant", help="a named variant of the stack file (listed below)")
    up.add_argument("--set", dest="variables", action="append", default=[], metavar="SERVICE.NAME=VALUE",
                    help="set a service variable (or shared.NAME=VALUE) on top of the stack file; repeatable")
    up.add_argument("--live", action="store_true",
                    help="the real APIs: no replay service, nor the variables that point at one")
    up.add_argument("--replay-dir", type=Path, help="serve this folder of cassettes or JSON instead of cassettes/")
    up.add_argument("--replay-latency", type=float, metavar="SECONDS", help="delay every replayed /info answer")
    up.add_argument("--replay-error-every", type=int, metavar="N", help="answer every Nth /info request with a 500")
    up.add_argument("--replay-malformed-every", type=int, metavar="N",
                    help="answer every Nth /info request with a body that is not JSON")
    up.add_argument("--draining-seconds", type=float, default=LOCAL_DRAINING_SECONDS, metavar="SECONDS",
                    help="SIGTERM to SIGKILL on stop, for services whose RAILWAY_DEPLOYMENT_DRAINING_SECONDS is "
                         f"unset (local default {LOCAL_DRAINING_SECONDS:g}; Railway's default is 0)")
    up.add_argument("--no-deploy", action="store_true", help="only run the services: none of the [[steps]]")
    up.add_argument("--service", dest="services", action="append", default=[], metavar="NAME",
                    help="run only this service and the ones its variables reference (repeatable), e.g. "
                         "--service web for the Prefect server and its Postgres; implies --no-deploy")
    up.add_argument("--step-timeout", dest="step_timeouts", action="append", default=[], metavar="STEP=SECONDS",
                    help="wait this long for a step instead of the stack file's timeout; repeatable")
    up.add_argument("-d", "--detach", action="store_true",
                    help="run in the background; return once the steps are done (output in logs/console.log)")

    deploy = sub.add_parser("deploy", help="redeploy repo services of the running stack, as a push does on Railway",
                            description="Snapshot the working tree and redeploy, in the running `up`: build, "
                                        "start the new deployment beside the old one, switch once it is Active, "
                                        "then SIGTERM the old one and SIGKILL it after its "
                                        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS (Railway's default: 0). Without "
                                        "SERVICE: every repo service whose watch_paths match a changed file. "
                                        "Exits 1 if a build or deploy fails; the old deployment then stays.")
    deploy.add_argument("services", nargs="*", metavar="SERVICE", help="redeploy these whatever changed")
    deploy.add_argument("--watch", action="store_true",
                        help="keep watching the working tree and deploy each change, until Ctrl-C")
    deploy.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                        help="with --watch: how often to look for changes (default 2)")
    deploy.add_argument("--timeout", type=float, default=_DEPLOY_TIMEOUT, metavar="SECONDS",
                        help=f"give up waiting for the running `up` after this long (default {_DEPLOY_TIMEOUT:g})")
    sub.add_parser("down", help="stop every service (SIGTERM, SIGKILL after draining); the data stays")
    status = sub.add_parser("status", help="services, states, URLs and the work pool")
    status.add_argument("--json", action="store_true", help="as JSON")
    logs = sub.add_parser("logs", help="a service's deploy log (or build log), or everything")
    logs.add_argument("service", nargs="?", help="a service or replica (worker.2); default: all, and the emulator's")
    logs.add_argument("--build", action="store_true", help="the build log: builder lines and the healthcheck")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    run = sub.add_parser("run", help="run a command with a service's variables and runtime, like `railway run`",
                         usage="python -m emulator run [--variant NAME] SERVICE -- COMMAND [ARG ...]")
    run.add_argument("--variant", help="plan this variant (default: the one the last `up` ran)")
    run.add_argument("service")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    sub.add_parser("reset", help="down, then delete the state dir: Postgres data, secrets, logs, snapshot")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    stack_file = _stack_from(argv)
    args = build_parser(stack_file).parse_args(argv)
    try:
        project = Project(stack_file or find_stack_file(), args.state_dir, args.repo)
        return _COMMANDS[args.command](project, args, argv)
    except EmulatorError as exc:
        print(f"emulator: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `logs | head` stopped reading: nothing left to do, and nothing to complain about
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _up(project: Project, args, argv: list[str]) -> int:
    options = UpOptions(variant=args.variant, variables=_variables(args.variables), live=args.live,
                        replay=_replay(args), draining_seconds=args.draining_seconds,
                        deploy=not (args.no_deploy or args.services), services=args.services,
                        step_timeouts=_timeouts(args.step_timeouts))
    project.stack(options)  # a bad variant or variable fails here, not in the background
    if not args.detach:
        return project.up(options)
    console = project.state.console_log
    console.parent.mkdir(parents=True, exist_ok=True)
    foreground = [word for word in argv if word not in ("-d", "--detach")]
    with open(console, "a") as out:
        child = subprocess.Popen([sys.executable, "-m", "emulator", *foreground], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return project.wait_detached(child, _DETACH_TIMEOUT)


def _deploy(project: Project, args, argv) -> int:
    if not args.watch:
        return project.deploy(args.services, args.timeout)
    if args.services:
        raise EmulatorError("--watch deploys what each change triggers; drop the SERVICE names, or drop --watch")
    return project.watch(args.interval, args.timeout)


def _down(project: Project, args, argv) -> int:
    stopped = project.down()
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _reset(project: Project, args, argv) -> int:
    stopped = project.reset()
    if stopped:
        print(f"stopped {', '.join(stopped)}")
    print(f"removed {project.state_dir}: Postgres data, secrets, logs and the source snapshot")
    return 0


def _status(project: Project, args, argv) -> int:
    status = project.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(_format_status(status))
    return 0


def _logs(project: Project, args, argv) -> int:
    files = project.log_files(args.service, "build" if args.build else "deploy")
    width = max(len(name) for name, _ in files)
    offsets = {}
    try:
        while True:
            for name, path in files:
                if not path.is_file():
                    continue
                with open(path, encoding="utf-8", errors="replace") as handle:
                    handle.seek(offsets.get(path, 0))
                    for line in handle:
                        print(f"{name.ljust(width)} | {line.rstrip()}" if len(files) > 1 else line.rstrip())
                    offsets[path] = handle.tell()
            if not args.follow:
                return 0
            sys.stdout.flush()
            time.sleep(0.3)
    except KeyboardInterrupt:
        return 0


def _run(project: Project, args, argv) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    return project.run(args.service, command, args.variant)


_COMMANDS = {"up": _up, "deploy": _deploy, "down": _down, "status": _status, "logs": _logs, "run": _run, "reset": _reset}


def _format_status(status: dict) -> str:
    if not status["services"]:
        return f"nothing has run from {status['state_dir']} yet; `python -m emulator up` starts it"
    head = f"running (pid {status['pid']})" if status["running"] else "stopped"
    stale = status.get("stale")
    if stale:
        head = f"not running (the emulator, pid {stale['pid']}, ended without stopping: killed?)"
    lines = [f"{head}, variant {status['variant'] or 'base'}, state in {status['state_dir']}"]
    if stale and stale["left_running"]:
        lines.append(f"Still running without it: {', '.join(stale['left_running'])}; "
                     "`python -m emulator down` stops them")
    width = max(len(name) for name in status["services"])
    for name, group in status["services"].items():
        replicas = group["replicas"]
        where = group["url"] or ", ".join(f"127.0.0.1:{r['port']}" for r in replicas.values() if r.get("port"))
        detail = group["error"] or where
        if len(replicas) > 1:
            detail += "  (" + ", ".join(f"{replica} {r['state']}" for replica, r in replicas.items()) + ")"
        lines.append(f"  {name.ljust(width)}  {group['state']:<10} {detail}")
    width = max((len(label) for label in status["urls"]), default=0) + 1
    lines.extend(f"{(label + ':').ljust(width)} {url}" for label, url in status["urls"].items())
    if status["pool"]:
        pool = status["pool"]
        lines.append(f"Work pool {pool['name']}: {pool['status']}, {pool['workers_online']} worker(s) online")
    for step in status["steps"]:
        found = step.get("flow_run") or {}
        detail = f"flow run {found['name']} {found['state'] or 'running'}" if found else \
            (f"{step['value']}" if step.get("value") is not None else "")
        lines.append(f"Step {step['name']}: {step['state']}" + (f" ({detail})" if detail else ""))
    if status["message"]:
        lines.append(f"Problem: {status['message']}")
    return "\n".join(lines)


def _variables(pairs: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        target, dot, rest = pair.partition(".")
        name, equals, value = rest.partition("=")
        if not (dot and equals and target and name):
            raise EmulatorError(f"--set {pair!r}: write SERVICE.NAME=VALUE, e.g. --set worker.PREFECT_WORKER_QUERY_SECONDS=1")
        out.setdefault(target, {})[name] = value
    return out


def _timeouts(pairs: list[str]) -> dict[str, float]:
    out = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            equals = ""
        if not (name and equals) or out[name] <= 0:
            raise EmulatorError(f"--step-timeout {pair!r}: write STEP=SECONDS, e.g. --step-timeout first-run=60")
    return out


def _replay(args) -> dict[str, str]:
    settings = {"REPLAY_DIR": args.replay_dir and str(args.replay_dir.resolve()),
                "REPLAY_LATENCY_SECONDS": args.replay_latency, "REPLAY_ERROR_EVERY": args.replay_error_every,
                "REPLAY_MALFORMED_EVERY": args.replay_malformed_every}
    chosen = {name: str(value) for name, value in settings.items() if value is not None}
    if chosen and args.live:
        raise EmulatorError("--live drops the replay services, so the --replay-* options have nothing to "
                            "act on; drop one or the other")
    return chosen


def _stack_from(argv: list[str]) -> Path | None:
    """The stack file: --stack, else --repo's railway.stack.toml, else the nearest one up from here; early,
    for `up --help` to list its variants."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--stack", type=Path)
    early.add_argument("--repo", type=Path)
    known, _ = early.parse_known_args(argv[:argv.index("--")] if "--" in argv else argv)
    if known.stack or known.repo:
        return known.stack or known.repo / STACK_FILE
    try:
        return find_stack_file()
    except EmulatorError:
        return None


def _variants_help(stack_file: Path | None) -> str | None:
    if stack_file is None:
        return None
    try:
        variants = list_variants(stack_file)
    except StackError:
        return None
    width = max((len(name) for name in variants), default=0)
    return "variants:\n" + "\n".join(f"  {name.ljust(width)}  {text}" for name, text in variants.items())

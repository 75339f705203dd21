import json

from emulator.state import StateDir


def test_the_state_dir_sits_beside_the_stack_file_and_is_named_after_it(tmp_path):
    assert StateDir.beside(tmp_path / "railway.stack.toml").root == tmp_path.resolve() / ".emulator"
    assert StateDir.beside(tmp_path / "mine.stack.toml").root == tmp_path.resolve() / ".emulator-mine"


def test_project_json_changes_merge_and_are_written_whole(tmp_path):
    state = StateDir(tmp_path / "state")
    assert state.read_project() == {} and state.read_runtime() is None
    state.update_project(phase="starting", steps=[])
    assert state.update_project(phase="ready") == {"phase": "ready", "steps": []}
    assert json.loads(state.project_file.read_text()) == {"phase": "ready", "steps": []}
    assert sorted(p.name for p in state.root.iterdir()) == ["project.json"]  # no temporary file left behind


def test_every_path_is_under_the_root(tmp_path):
    state = StateDir(tmp_path)
    for path in (state.logs, state.volumes, state.secrets, state.source, state.tls, state.edge_cert,
                 state.runtimes, state.homes, state.runtime_file, state.project_file, state.console_log):
        assert path.is_relative_to(state.root)

import psycopg

from emulator.postgres import PostgresServer


def test_data_survives_restart_and_wipe_removes_it(tmp_path):
    server = PostgresServer(tmp_path / "pg", password="s3cret-pw").start()
    try:
        with psycopg.connect(server.url()) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        server.stop()
        server.start()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT x FROM kept").fetchone() == (42,)
    finally:
        server.wipe()
    assert not (tmp_path / "pg").exists()


def test_tcp_needs_the_password(tmp_path):
    server = PostgresServer(tmp_path / "pg", password="right-one").start()
    try:
        bad = server.url().replace("right-one", "wrong-one")
        try:
            psycopg.connect(bad).close()
        except psycopg.OperationalError as exc:
            assert "password authentication failed" in str(exc)
        else:
            raise AssertionError("a wrong password was accepted")
    finally:
        server.wipe()

"""The runtime: carries out the model's plans (builds, processes, the edge, logs, PostgreSQL, the replay, the
stack's steps) and watches what it started."""

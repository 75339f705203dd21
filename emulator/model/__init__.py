"""The model: what Railway would do with a repository and a stack file, computed without side effects.

No module here starts a process or writes a file: the stack file, its variables, each builder's rules, the
Procfile, Railpack's config and the plans (what to build with which commands, what each replica runs, in
which paths). emulator.runtime carries the plans out.
"""

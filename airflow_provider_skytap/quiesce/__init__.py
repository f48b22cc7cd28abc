"""The VM side of quiescing: the session API, the guardian script, its profiles, the commands.

- :mod:`.spec`: :class:`~.spec.QuiesceSpec` (validated settings) and :class:`~.spec.QuiesceTarget`.
- :mod:`.session`: :class:`~.session.QuiesceSession`: preflight, arm, release over SSH.
- :mod:`.report`: the typed per-host report and its ``to_xcom()``.
- :mod:`.commands`: every command sent to a VM, each user value quoted by :func:`shlex.quote`,
  and the report protocol. ``guardian.sh`` and ``profiles/*.sh`` are package data.

Nothing here imports the operators; they are thin wrappers over the session.
"""

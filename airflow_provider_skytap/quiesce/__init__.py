"""What runs on the VMs for QuiesceOperator: the guardian script, its profiles, the commands.

``guardian.sh`` and ``profiles/*.sh`` are package data; :mod:`.commands` builds every command
the operator sends, with each user value quoted by :func:`shlex.quote`.
"""

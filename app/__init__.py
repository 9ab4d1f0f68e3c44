"""The application floor: the ``mma`` command line and the jobs it runs (orchestration only, no maths).

It is the one floor that knows every room (``mma.probe``, ``mma.adapters``, ``mma.analysis``); the rooms never
import it. The ground helpers every floor shares (errors, io, seeding, distributed) live in the package root
``mma``.
"""

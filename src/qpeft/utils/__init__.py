"""The bottom stage: pieces every other part of qpeft may use, and which import nothing of qpeft above them.

- ``errors``: ``UsageError``, the one-line error the CLI prints;
- ``atomic``: crash-safe text, JSON and CSV writes;
- ``cache``: the qpeft cache folder (converted models, compiled kernels);
- ``compat``: the library versions the tests prove;
- ``distributed``: process roles under a multi-process launcher;
- ``extras``: whether an optional library (Qiskit, PennyLane) is installed;
- ``memory``: peak memory of a block of work;
- ``version``: qpeft's version number.
"""

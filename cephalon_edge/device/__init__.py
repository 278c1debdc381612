"""The device half: what runs an edge package (torch-free).

Manifest and program, the router that runs the program (compiled once into a plan), the
runtimes (one module per runtime, from the repository's ``runtimes/`` folder), exit scores,
input preprocessing, data loading and device profiles. Needs numpy and one runtime; imports nothing from
``cephalon_edge.toolchain`` (a test proves it in a venv without torch).
"""

"""The device half: what runs an edge package (torch-free).

Manifest and program, the router that interprets the program, the runtimes (one module per
runtime, from the repository's ``runtimes/`` folder), exit scores, input preprocessing, data
loading and device profiles. Needs numpy and one runtime; imports nothing from
``cephalon_edge.toolchain`` (a test proves it in a venv without torch).
"""

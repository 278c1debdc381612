"""Package discovery, automatic so that no subpackage can be forgotten: every package under
``cephalon_edge/``, plus the repository's top-level ``converters/``, ``runtimes/`` and
``profiles/`` folders, installed inside it (never as top-level packages). Metadata, extras
and package data live in pyproject.toml."""

from setuptools import find_packages, setup

INSIDE = {  # installed name -> folder at the repository top level
    "cephalon_edge.toolchain.converters": "converters",
    "cephalon_edge.device.runtimes": "runtimes",
    "cephalon_edge.profiles": "profiles",
}

packages = find_packages(include=["cephalon_edge", "cephalon_edge.*"])
package_dir = {"cephalon_edge": "cephalon_edge"}
for name, folder in INSIDE.items():
    packages += [name, *(f"{name}.{sub}" for sub in find_packages(folder))]
    package_dir[name] = folder

setup(packages=packages, package_dir=package_dir)

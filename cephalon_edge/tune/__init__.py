"""Tuning and measuring, above both halves: calibrate exit thresholds, bench on the host and
on Android devices over adb, evaluate a package on a dataset.

Everything here runs on the device half alone (an install without torch calibrates and
benches a package); it never imports ``cephalon_edge.toolchain``.
"""

"""Converters, one module per target format (the build half).

Each module exposes ``convert(segments, spec, out_dir, on_segment=None) -> list[SegmentArtifact]``;
a converter whose packages cannot run on every machine also exposes ``verify(manifest)`` for
spec-level checks. Heavy imports happen inside ``convert``. Which module serves which target,
with its quantization modes, is registered once in ``cephalon_edge.targets``.
"""

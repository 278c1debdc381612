"""Core ML: ML Program segments with coremltools.

One multifunction ``segments.mlpackage`` (a function per segment, shared weights) when the
deployment target allows it (iOS 18 / macOS 15 and later), otherwise one ``.mlpackage`` per
segment. Compute precision fp16 by default; ``int8`` adds linear weight quantization
(coremltools.optimize.coreml), ``palettize`` a 6-bit k-means weight palette; ``none`` keeps fp32. Compute units and the deployment target
come from the profile (default CPU_AND_NE, iOS 17). Segments have batch 1.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from cephalon_edge.capture import captured_output

from cephalon_edge.toolchain.artifacts import ExportSpec, SegmentArtifact, identifier
from cephalon_edge.toolchain.segments import SegmentSet, StaticModel
from cephalon_edge.errors import ExportError, UsageError
from cephalon_edge.targets import COREML_COMPUTE_UNITS

PALETTE_BITS = 6
MULTIFUNCTION_TARGETS = ("iOS18", "macOS15", "watchOS11", "tvOS18", "visionOS2")


def settings(spec: ExportSpec) -> dict[str, str]:
    """Deployment target and compute units, from the profile's [coreml] section or defaults."""
    section = spec.profile_section("coreml")
    target = section.get("deployment_target", "iOS17")
    units = section.get("compute_units", "CPU_AND_NE")
    if units not in COREML_COMPUTE_UNITS:
        raise UsageError(f"profile {spec.profile}: unknown Core ML compute units {units!r}",
                         hint=f"one of {', '.join(COREML_COMPUTE_UNITS)}")
    return {"deployment_target": target, "compute_units": units}


def _convert_one(module, examples: tuple, outputs: list[str], spec: ExportSpec, conf: dict[str, str], path: Path,
                 what: str, input_names: list[str] | None = None) -> None:
    import coremltools as ct
    import torch

    target = getattr(ct.target, conf["deployment_target"], None)
    if target is None:
        raise UsageError(f"unknown Core ML deployment target {conf['deployment_target']!r}")
    try:
        with warnings.catch_warnings(), captured_output():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module.eval(), examples)
            model = ct.convert(
                traced, inputs=[ct.TensorType(name=n, shape=tuple(x.shape))
                                for n, x in zip(input_names or ["x"], examples)],
                outputs=[ct.TensorType(name=o) for o in outputs], convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=ct.precision.FLOAT32 if spec.quantize == "none" else ct.precision.FLOAT16,
                compute_units=getattr(ct.ComputeUnit, conf["compute_units"]))
            if spec.quantize in ("int8", "palettize"):
                import coremltools.optimize.coreml as cto

                if spec.quantize == "int8":
                    config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8"))
                    model = cto.linear_quantize_weights(model, config)
                else:
                    config = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=PALETTE_BITS))
                    model = cto.palettize_weights(model, config)
            model.save(str(path))
    except UsageError:
        raise
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise ExportError(f"Core ML conversion of {what} failed: {(lines[0] if lines else type(exc).__name__)[:300]}") from exc


def convert(segments: SegmentSet, spec: ExportSpec, out_dir: Path,
            on_segment: Callable[[str], None] | None = None) -> list[SegmentArtifact]:
    conf = settings(spec)
    multifunction = conf["deployment_target"] in MULTIFUNCTION_TARGETS
    extra = {"coreml": conf}
    artifacts = []
    staging = Path(tempfile.mkdtemp(prefix="coreml-", dir=out_dir))
    try:
        for seg in segments:
            where = (staging if multifunction else out_dir) / f"{seg.name}.mlpackage"
            _convert_one(seg.module, (segments.example_input(seg.name)[:1],), seg.outputs, spec, conf, where,
                         f"segment {seg.name}")
            artifacts.append(SegmentArtifact(seg.name, "segments.mlpackage" if multifunction else where.name, ["x"],
                                             list(seg.outputs), signature=identifier(seg.name) if multifunction else None,
                                             extra=extra))
            if on_segment:
                on_segment(seg.name)
        if multifunction:
            import coremltools as ct

            desc = ct.utils.MultiFunctionDescriptor()
            for art in artifacts:
                desc.add_function(str(staging / f"{art.name}.mlpackage"), src_function_name="main",
                                  target_function_name=art.signature)
            desc.default_function_name = artifacts[0].signature
            with captured_output():
                ct.utils.save_multifunction(desc, str(out_dir / "segments.mlpackage"))
        if spec.with_static:
            net = segments.net
            names = StaticModel(net).output_names
            static = StaticModel(net)
            inputs = static.graph_input_names
            _convert_one(static, static.example_inputs(1), names, spec, conf, out_dir / "static.mlpackage",
                         "the static model", inputs)
            artifacts.append(SegmentArtifact("static", "static.mlpackage", inputs, names, extra=extra))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return artifacts


def verify(manifest: Any) -> dict[str, Any]:
    """Spec-level checks that run anywhere: every segment maps to a function or model whose
    input and outputs have the manifest's names and shapes, in the expected precision."""
    import coremltools as ct

    from cephalon_edge.errors import ParityError

    specs: dict[str, Any] = {}
    checked = 0
    for name, seg in manifest.segments.items():
        path = manifest.member(seg["file"])
        if seg["file"] not in specs:
            specs[seg["file"]] = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
        model_spec = specs[seg["file"]]
        if seg.get("signature"):
            functions = {f.name: f for f in model_spec.description.functions}
            if seg["signature"] not in functions:
                raise ParityError(f"{seg['file']} has no function {seg['signature']} for segment {name}")
            desc = functions[seg["signature"]]
        else:
            desc = model_spec.description
        inputs = [(i.name, list(i.type.multiArrayType.shape)) for i in desc.input]
        want = [("x", [1, *seg["shapes"]["inputs"][0]])]
        if inputs != want:
            raise ParityError(f"Core ML segment {name}: inputs {inputs}, the manifest says {want}")
        outputs = [o.name for o in desc.output]
        if outputs != seg["outputs"]:
            raise ParityError(f"Core ML segment {name}: outputs {outputs}, the manifest says {seg['outputs']}")
        checked += 1
    return {"segments_checked": checked, "files": sorted(specs),
            "spec_version": max(s.specificationVersion for s in specs.values())}

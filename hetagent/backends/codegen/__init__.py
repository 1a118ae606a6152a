"""Code generation (ISSUE 9): device-specific executables for the placed tensor operators.

    build_from_plan("plan.json", "assets/")                 # what `hetagent build` runs
    build_assets(placements, "assets/", targets=None, op_attrs={...})
    op = load_host_asset(entry, base_dir="assets/")         # an llvm-cpu asset as a callable
    CompiledEmbedder(entry, "assets/").encode(texts)        # drop-in for backends.embed.Embedder

See docs/codegen.md. Heavy imports (torch, torch-mlir, IREE) happen on use, not on import.
"""
from hetagent.backends.codegen.build import (BuildOptions, asset_key, build_assets, build_from_plan,
                                             plan_op_attrs, read_manifest, validate_manifest)
from hetagent.backends.codegen.host import (CompiledEmbedder, HostOperator, OnnxOperator, load_host_asset,
                                            load_onnx_asset)
from hetagent.backends.codegen.targets import Target, device_targets, parse_target

__all__ = ["BuildOptions", "CompiledEmbedder", "HostOperator", "OnnxOperator", "Target", "asset_key",
           "build_assets", "build_from_plan", "device_targets", "load_host_asset", "load_onnx_asset",
           "parse_target", "plan_op_attrs", "read_manifest", "validate_manifest"]

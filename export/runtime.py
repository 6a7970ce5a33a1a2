"""Run exported models as :data:`dfq.evaluation.Predictor` s: an ONNX Runtime session or a TensorRT engine.

This module owns inference on deployment artifacts (spec: DEPLOYMENT.md §c, ORT and TensorRT facts):

* :func:`ort_predictor` -- an ``onnxruntime.InferenceSession`` behind the Predictor interface (CPU
  images in, CPU float32 logits out). It records the providers the session *actually* uses
  (``session.get_providers()``) and warns when CUDA was requested but is not active:
  onnxruntime-gpu silently falls back to the CPU when the CUDA libraries are missing.
* :class:`TrtPredictor` -- a serialized TensorRT plan run with torch CUDA tensors
  (``set_tensor_address`` + ``execute_async_v3`` on the current torch stream); tensorrt is
  imported lazily and its absence is a one-line :class:`dfq.errors.DfqError`.

The TensorRT names used here are checked against the real 10.x/11.x bindings by
``benchmarks/trt_api_check.py`` (names only: this code has never run against TensorRT).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dfq.errors import DfqError

__all__ = ["OrtPredictor", "ort_predictor", "TrtPredictor", "import_tensorrt", "TRT_MISSING", "int8_dot_may_saturate"]

log = logging.getLogger(__name__)

TRT_MISSING = "TensorRT is not installed: pip install dfq[trt] on a machine with an NVIDIA GPU"


def import_tensorrt() -> Any:
    """``import tensorrt`` or a one-line DfqError (only a missing tensorrt module is translated)."""
    try:
        import tensorrt as trt
    except ImportError as e:
        if e.name != "tensorrt":
            raise
        raise DfqError(TRT_MISSING) from None
    return trt


class OrtPredictor:
    """An ONNX Runtime session as a Predictor.

    Attributes:
        session: the ``InferenceSession``.
        providers: providers the session actually runs with (``session.get_providers()``).
        requested: providers asked for.
        qdq_fused: whether ORT could fuse Q/DQ pairs into its integer kernels (see :func:`ort_predictor`).
    """

    def __init__(self, session: Any, requested: Sequence[str], qdq_fused: bool = True) -> None:
        self.session = session
        self.qdq_fused = qdq_fused
        self.requested = list(requested)
        self.providers: list[str] = list(session.get_providers())
        inp = session.get_inputs()[0]
        self.input_name: str = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32

    def __call__(self, images: Tensor) -> Tensor:
        x = images.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        (logits,) = self.session.run(None, {self.input_name: x})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))

    def __repr__(self) -> str:
        return f"OrtPredictor(providers={self.providers}, qdq_fused={self.qdq_fused})"


def int8_dot_may_saturate(cpuinfo: str | None = None) -> bool:
    """Whether this is an x86-64 CPU without VNNI (``avx512_vnni`` / ``avx_vnni`` in /proc/cpuinfo).

    There ONNX Runtime's fused u8 x s8 integer kernels add pairs of byte products in 16 bits, which can
    saturate (ORT's quantization guide advises ``reduce_range`` or U8U8 on such CPUs), so a fused Q/DQ
    graph may deviate from fake-quant by more than the quantization noise. Measured on an AVX2-only
    EPYC (session 20): timm's ``test_vit`` W8A8, mean |ORT - torch| 0.0169 fused against 0.0012 with
    ``optimize=False``, quantization error 0.0051; ``test_resnet`` matched either way; DeiT-Tiny W8A8 on
    500 ImageNet images, KL to FP 0.0286 fused vs 0.0265 unfused (torch 0.0260). :func:`ort_predictor`
    therefore leaves integer Q/DQ unfused on such CPUs by default. False where unknown (no
    /proc/cpuinfo, other architectures).

    >>> int8_dot_may_saturate("flags : fpu sse2 avx2"), int8_dot_may_saturate("flags : avx2 avx512_vnni")
    (True, False)
    """
    import platform

    if cpuinfo is None:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            return False
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return "avx2" in flags and not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


FP8_DISABLED_RULES = ("ClipQuantRewrite", "ReluQuantRewrite")
"""ONNX Runtime rewrite rules turned off for FP8 graphs: they fold a Clip (ReLU6) or Relu into the
following QuantizeLinear by reading its zero-point as an integer, and ORT 1.31 fails the session on an
FP8 zero-point ("Unexpected data type for QuantizeLinear input y_zero_point")."""


def ort_predictor(
    path: str | Path,
    providers: Sequence[str] | None = None,
    *,
    threads: int | None = None,
    optimized_model_path: str | Path | None = None,
    optimize: bool = True,
    fuse_qdq: bool | None = None,
) -> OrtPredictor:
    """Build an ONNX Runtime session for ``path``.

    Args:
        path: the ``.onnx`` file.
        providers: execution providers in priority order (default: CPU only).
        threads: intra-op threads (default: ONNX Runtime's choice).
        optimized_model_path: also write the graph after ORT's optimizations (shows what it fused).
        optimize: apply ORT's graph optimizations (Q/DQ fusion into integer kernels among them, except
            in FP8 graphs, where ORT 1.31's fusion produces an invalid graph); False runs every node as
            written (a reference for how much fusion alone moves results).
        fuse_qdq: let ORT fuse INT8 Q/DQ pairs into its integer kernels. None (default): fuse unless
            :func:`int8_dot_may_saturate` -- on an x86 CPU without VNNI those kernels may saturate, so
            the Q/DQ nodes then run as written (``session.disable_quant_qdq``; ORT's other
            optimizations stay) and the session computes what the graph says, as TensorRT would.
            True: fuse anyway (the speed of ORT's integer kernels). FP8 graphs are never fused.

    Returns:
        An :class:`OrtPredictor`; ``.providers`` lists what is really active, ``.qdq_fused`` whether
        integer Q/DQ fusion was on (False for a graph without integer Q/DQ).
    """
    import onnxruntime as ort

    requested = list(providers or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    active = [p for p in requested if p in available]
    on_cpu = active[:1] in ([], ["CPUExecutionProvider"])  # the kernels that may saturate are the CPU EP's
    options = ort.SessionOptions()
    disabled: list[str] | None = None
    if threads:
        options.intra_op_num_threads = threads
    fused, kind = False, _qdq_kind(path) if optimize else None
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif kind == "fp8":  # ORT 1.31 fuses FP8 DQ -> MatMul into MatMulIntegerToFloat, then rejects its own graph
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        disabled = list(FP8_DISABLED_RULES)
    elif kind == "int" and (fuse_qdq is False or (fuse_qdq is None and on_cpu and int8_dot_may_saturate())):
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        if fuse_qdq is None:
            log.info("this CPU has no VNNI, so ONNX Runtime's fused int8 kernels may saturate: %s runs its "
                     "Q/DQ nodes unfused (exact, slower); fuse_qdq=True fuses anyway", Path(path).name)
    else:
        fused = kind == "int"
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    missing = [p for p in requested if p not in available]
    if missing:
        warnings.warn(
            f"ONNX Runtime providers {missing} are not available here (available: {available})", stacklevel=2
        )
    session = ort.InferenceSession(
        str(path), options, providers=active or None,
        disabled_optimizers=disabled,
    )
    pred = OrtPredictor(session, requested, qdq_fused=fused)
    for want in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        if want in requested and want not in pred.providers:
            warnings.warn(
                f"{want} was requested but the session runs on {pred.providers} "
                "(onnxruntime-gpu falls back silently when CUDA/cuDNN libraries are missing)",
                stacklevel=2,
            )
    log.info("ONNX Runtime session on %s", pred.providers)
    return pred


def _qdq_kind(path: str | Path) -> str | None:
    """``"fp8"`` for a graph holding FLOAT8E4M3FN tensors (an FP8 Q/DQ export), ``"int"`` for another one
    with Q/DQ nodes, None for a graph without; reads the file without external data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_type == onnx.TensorProto.FLOAT8E4M3FN for t in model.graph.initializer):
        return "fp8"
    qdq = ("QuantizeLinear", "DequantizeLinear")
    return "int" if any(n.op_type in qdq for n in model.graph.node) else None


def _torch_dtypes(trt: Any) -> dict[Any, torch.dtype]:
    """``trt.DataType`` member -> torch dtype, for the engine I/O dtypes dfq feeds and reads."""
    dt = trt.DataType
    return {
        dt.FLOAT: torch.float32,
        dt.HALF: torch.float16,
        dt.BF16: torch.bfloat16,
        dt.INT32: torch.int32,
        dt.INT64: torch.int64,
    }


class TrtPredictor:
    """A serialized TensorRT engine as a Predictor (one input, one output; dynamic batch).

    Args:
        plan_path: the ``.plan`` file written by :func:`dfq.export.tensorrt.build_engine`.
        device: CUDA device index.

    Raises:
        DfqError: tensorrt is not installed, CUDA is unavailable or the plan cannot be deserialized.
    """

    def __init__(self, plan_path: str | Path, device: int = 0) -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise DfqError("TensorRT needs a CUDA GPU, and torch sees none")
        self.device = torch.device("cuda", device)
        self._dtypes = _torch_dtypes(trt)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
        if self.engine is None:
            raise DfqError(f"cannot deserialize {plan_path}: built by another TensorRT version or GPU?")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise DfqError(
                f"expected one input and one output, the engine has {self.inputs} / {self.outputs}"
            )

    def _dtype(self, name: str) -> torch.dtype:
        dtype = self.engine.get_tensor_dtype(name)
        if dtype not in self._dtypes:
            raise DfqError(f"engine tensor {name!r} has dtype {dtype}, which TrtPredictor does not feed or read")
        return self._dtypes[dtype]

    def run_cuda(self, x: Tensor) -> Tensor:
        """Run on a CUDA tensor; returns the CUDA output (no host copy)."""
        inp, out = self.inputs[0], self.outputs[0]
        x = x.to(self.device, self._dtype(inp)).contiguous()
        self.context.set_input_shape(inp, tuple(x.shape))
        y = torch.empty(tuple(self.context.get_tensor_shape(out)), dtype=self._dtype(out), device=self.device)
        self.context.set_tensor_address(inp, x.data_ptr())
        self.context.set_tensor_address(out, y.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return y

    def __call__(self, images: Tensor) -> Tensor:
        y = self.run_cuda(images)
        return y.float().cpu()  # .cpu() synchronizes the stream

"""ONNX import, measured: the architectures inside the onnx wheel against onnxruntime, and the
embedded EfficientNet-Lite0 exported by both torch exporters and imported back.

    python benchmarks/onnx_models.py wheel        # import time, layers, |ours - onnxruntime| per architecture
    python benchmarks/onnx_models.py lite0        # export, import, logits, inversions vs the torch model

Writes benchmarks/results/onnx_models.json and, for ``lite0``, docs/images/onnx_lite0_chelsea.png
(original | torch model | imported ONNX file, default preset). The exported file goes to
out/onnx/lite0.onnx (not kept in the repository: 19 MB).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "out" / "onnx"
ARCHS = ["bvlc_alexnet", "vgg19", "resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2",
         "shufflenet", "zfnet512"]
STAGES = ["blocks.1", "blocks.3"]


def _results() -> dict:
    path = RESULTS / "onnx_models.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _write(key: str, value) -> None:
    from preimage.io import write_json

    data = _results()
    data[key] = value
    write_json(RESULTS / "onnx_models.json", data)


def _ort(path: Path, x: np.ndarray, name: str) -> np.ndarray:
    import onnx
    import onnxruntime as ort
    from onnx import helper

    proto = onnx.load(str(path))
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    inits = {i.name for i in proto.graph.initializer}
    image = [i.name for i in proto.graph.input if i.name not in inits][0]
    return sess.run([name], {image: x})[0]


def wheel() -> None:
    import onnx

    import preimage
    from preimage.errors import PreimageError
    from preimage.layers import list_layers

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    rows = []
    for arch in ARCHS:
        path = light / f"light_{arch}.onnx"
        row: dict = {"arch": arch, "file_kb": round(path.stat().st_size / 1024, 1)}
        t0 = time.perf_counter()
        try:
            model = preimage.load_model(path)
        except PreimageError as exc:
            rows.append({**row, "imported": False, "error": str(exc)})
            print(arch, "FAILED", exc, flush=True)
            continue
        row["import_seconds"] = round(time.perf_counter() - t0, 2)
        row["layers"] = len(list_layers(model))
        row["parameters_m"] = round(sum(t.numel() for t in [*model.net.parameters(), *model.net.buffers()]) / 1e6, 1)
        row["repairs"] = model.normalization.split("; ")[1:]
        x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0), requires_grad=True)
        logits = model.net(x)
        logits.sum().backward()
        row["grad_abs_sum"] = float(x.grad.abs().sum())
        g = onnx.load(str(path)).graph
        producer = next(n for n in g.node if g.output[0].name in n.output)  # a final Softmax is removed on import
        ref = _ort(path, x.detach().numpy(), producer.input[0] if producer.op_type == "Softmax" else g.output[0].name)
        ours = logits.detach().numpy().reshape(ref.shape)
        row["max_abs_diff"] = float(np.abs(ours - ref).max())
        row["max_abs_logit"] = float(np.abs(ref).max())
        row["relative_diff"] = row["max_abs_diff"] / row["max_abs_logit"] if row["max_abs_logit"] else row["max_abs_diff"]
        row["imported"] = True
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model
    _write("wheel", {"rows": rows, "torch_threads": torch.get_num_threads(),
                     "command": "python benchmarks/onnx_models.py wheel"})


def _stage_output(model, stage: str) -> str:
    from preimage.layers import list_layers

    parts = stage.split(".")
    prefix = "/" + "/".join(parts[:-1] + [stage]) + "/"
    names = [a for a in model.aliases if a.startswith(prefix) and not a.endswith("_output_0")]
    order = {i.name: i.order for i in list_layers(model)}
    return max(names, key=lambda a: order.get(model.aliases[a], -1))


def lite0(steps: int | None) -> None:
    import preimage
    from preimage.errors import PreimageError
    from preimage.viz import grid

    OUT.mkdir(parents=True, exist_ok=True)
    torch_model = preimage.load_model("efficientnet_lite0")
    net = torch_model.net.to(memory_format=torch.contiguous_format)
    x = preimage.load_tensor("sample:coffee", 224)
    out: dict = {"exporters": {}}
    for label, kwargs in (("legacy (dynamo=False, opset_version=17)", {"dynamo": False, "opset_version": 17}),
                          ("default (dynamo=True)", {"dynamo": True})):
        path = OUT / f"lite0_{'dynamo' if kwargs['dynamo'] else 'legacy'}.onnx"
        row: dict = {}
        t0 = time.perf_counter()
        try:
            torch.onnx.export(net, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["image"],
                              output_names=["logits"], **kwargs)
            row["export_seconds"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            model = preimage.load_model(path, mean=0.5, std=0.5, classes=list(torch_model.classes))
            row["import_seconds"] = round(time.perf_counter() - t0, 1)
            with torch.no_grad():
                row["max_abs_logit_diff"] = float((model(x) - torch_model(x)).abs().max())
                row["top1"] = model.classes[int(model(x).argmax())]
        except PreimageError as exc:
            row["error"] = str(exc)
        except Exception as exc:  # the exporter itself
            row["error"] = f"export failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        out["exporters"][label] = row
        print(label, json.dumps(row), flush=True)
    torch_model.net.to(memory_format=torch.channels_last)
    onnx_model = preimage.load_model(OUT / "lite0_legacy.onnx", mean=0.5, std=0.5)
    runs, pics = [], []
    overrides = {"steps": steps} if steps else {}
    for stage in STAGES:
        onnx_layer = _stage_output(onnx_model, stage)
        row = {"stage": stage, "onnx_layer": onnx_layer}
        for label, m, layer in (("torch", torch_model, stage), ("onnx", onnx_model, onnx_layer)):
            t0 = time.perf_counter()
            inv = preimage.invert(m, "sample:chelsea", layers=[layer], **overrides)
            row[f"{label}_feature_error"] = round(inv.metrics[0]["feature_error"][layer], 4)
            row[f"{label}_seconds"] = round(time.perf_counter() - t0, 1)
            if stage == "blocks.3":
                pics.append((label, inv))
        row["relative_difference"] = round(abs(row["onnx_feature_error"] - row["torch_feature_error"])
                                           / row["torch_feature_error"], 4)
        runs.append(row)
        print(json.dumps(row), flush=True)
    (_, a), (_, b) = pics
    grid([a.reference[0], a.image[0], b.image[0]],
         labels=["sample:chelsea", "torch blocks.3", f"ONNX {_stage_output(onnx_model, 'blocks.3')}"]
         ).save(ROOT / "docs" / "images" / "onnx_lite0_chelsea.png")
    out["inversion"] = {"image": "sample:chelsea", "preset": "default", "steps": steps or "preset", "runs": runs}
    out["command"] = "python benchmarks/onnx_models.py lite0" + (f" --steps {steps}" if steps else "")
    _write("lite0", out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["wheel", "lite0"])
    p.add_argument("--steps", type=int, default=None, help="inversion steps (default: the preset's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wheel() if args.what == "wheel" else lite0(args.steps)


if __name__ == "__main__":
    main()

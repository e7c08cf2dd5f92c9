#!/usr/bin/env python3
"""AutoAWQ side by side with phiquant's AWQ: the same model, the same calibration windows and the
same held-out scoring (the native engine of `awq_quality`), so that the two searches are compared
on one machine in one session.

    cargo build --release --no-default-features -p phiquant-convert --example awq_quality
    Q=target/release/examples/awq_quality
    M=../shared/models/stories260K
    $Q --model $M --calib ../shared/corpora/tinystories-val.txt --samples 32 --len 512 \
        --group 32 --dump-calib /tmp/windows.json
    python3 scripts/bench/autoawq.py --model $M --windows /tmp/windows.json --group 32 \
        --out /tmp/autoawq-stories260K
    $Q --model $M --calib ../shared/corpora/tinystories-val.txt --samples 32 --len 512 \
        --heldout ../shared/corpora/sotu.txt --chunks 8 --ctx 512 --group 32 \
        $(for v in rtn-asym awq-asym rtn-sym awq-sym; do echo --compare /tmp/autoawq-stories260K/$v; done)

Writes four checkpoints under --out, each with every decoder linear quantized and dequantized by
AutoAWQ's own quantizer (`pseudo_quantize_tensor`; embedding, norms and LM head in full
precision, as `awq_quality` does): `rtn-asym` and `rtn-sym` (no search), `awq-asym` and
`awq-sym` (AutoAWQ's scale and clipping searches on the calibration windows, then the same
quantizer). `asym` is AutoAWQ's zero-point form, `sym` its symmetric one.

Needs torch, transformers 4.51 and AutoAWQ 0.2.9 (installed without its GPU dependencies):

    python3 -m venv /tmp/awqvenv
    /tmp/awqvenv/bin/pip install torch transformers==4.51.3 accelerate safetensors tokenizers \
        typing_extensions zstandard huggingface_hub datasets
    /tmp/awqvenv/bin/pip install --no-deps autoawq==0.2.9

AutoAWQ 0.2.9 does not run this on a CPU as published; the script changes three things, each
without changing its algorithm:

1. The grid search's backup of the weights (`{k: v.cpu() ...}`) is the live tensor on a CPU, so
   every grid point would start from the previous one's weights; the module's state_dict is
   cloned for it instead.
2. AutoAWQ needs every input width to be a multiple of the group size (SmolLM2's 576 and
   stories260K's MLP width 172 are not). Its quantizer and clipping search are given ONNX
   Runtime's block layout instead: whole groups, then one shorter last group (576 in groups of
   128: 128, 128, 128, 128, 64), each quantized or searched by AutoAWQ's own code; the chosen
   thresholds are applied over the same blocks. The scale search's weight statistic is left as
   AutoAWQ computes it (it reshapes the weights into groups, which then run across the ends of
   rows when the width is not a multiple).
3. Its clipping search handles rows in batches of 64 and asserts that the row count divides;
   a matrix with fewer rows (stories260K's v_proj, 32) is padded with zero rows for the search and
   the thresholds of the padded rows dropped.

Nothing of AutoAWQ is copied here: the script subclasses its quantizer and calls it.
"""
import argparse
import json
import pathlib
import shutil
import sys

import torch

# This folder holds phiquant's own awq.py, which would shadow AutoAWQ's `awq` package.
HERE = pathlib.Path(__file__).resolve().parent
sys.path = [p for p in sys.path if pathlib.Path(p or ".").resolve() != HERE]


def quantizer_class():
    from awq.quantize.quantizer import AwqQuantizer

    class CpuQuantizer(AwqQuantizer):
        def _compute_best_scale(self, x, w_mean, x_mean, module2inspect, *args, **kwargs):
            # Change 1: the backup the grid restores from must be a copy.
            live = module2inspect.state_dict

            def copied(*a, **k):
                return {n: t.clone() for n, t in live(*a, **k).items()}

            module2inspect.state_dict = copied
            try:
                return super()._compute_best_scale(
                    x, w_mean, x_mean, module2inspect, *args, **kwargs
                )
            finally:
                del module2inspect.state_dict

        def _parts(self, k):
            """ONNX Runtime's blocks of a width `k` as (start, end, group) runs: the whole
            groups, then the shorter last one."""
            g = self.group_size
            full = k - k % g
            runs = [(0, full, g)] if full else []
            return runs + ([(full, k, k - full)] if full < k else [])

        def _each_part(self, k, fn):
            """`fn(start, end)` for each run of `_parts(k)`, with the group size of the run."""
            out, g = [], self.group_size
            for start, end, size in self._parts(k):
                self.group_size = size
                try:
                    out.append(fn(start, end))
                finally:
                    self.group_size = g
            return out

        def pseudo_quantize_tensor(self, w):
            # Change 2: a shorter last block when the width is not a multiple.
            if w.shape[-1] % self.group_size == 0:
                return super().pseudo_quantize_tensor(w)
            parts = self._each_part(
                w.shape[-1],
                lambda a, b: super(CpuQuantizer, self).pseudo_quantize_tensor(
                    w[..., a:b].contiguous()
                ),
            )
            zeros = [p[2] for p in parts]
            return (
                torch.cat([p[0] for p in parts], dim=-1),
                torch.cat([p[1] for p in parts], dim=-1),
                None if zeros[0] is None else torch.cat(zeros, dim=-1),
            )

        def _compute_best_clip(self, w, input_feat, *args, **kwargs):
            # Change 3: rows padded to a multiple of the search's batch of 64.
            rows = w.shape[0]
            if rows % 64:
                w = torch.cat([w, w.new_zeros(-rows % 64, w.shape[1])])
            # Change 2: each run of whole groups, and the last shorter block, searched alone.
            x = input_feat.reshape(-1, input_feat.shape[-1])
            parts = self._each_part(
                w.shape[1],
                lambda a, b: super(CpuQuantizer, self)._compute_best_clip(
                    w[:, a:b].contiguous(), x[:, a:b].contiguous(), *args, **kwargs
                ),
            )
            return torch.cat(parts, dim=1)[:rows]

        def _search_best_clip(self, layer, named_linears, input_feat):
            # Change 2: the thresholds applied over the blocks here, not by `apply_clip`,
            # which needs whole groups.
            for name, max_val in super()._search_best_clip(layer, named_linears, input_feat):
                lin = named_linears[name]
                k = lin.weight.shape[1]
                widths = [b - a for a, b, _ in self._parts(k)]
                groups = [g for a, b, g in self._parts(k) for _ in range((b - a) // g)]
                bound = torch.repeat_interleave(
                    max_val.reshape(max_val.shape[0], -1),
                    torch.tensor(groups),
                    dim=1,
                )
                assert bound.shape[1] == sum(widths) == k
                lin.weight.data = torch.clamp(lin.weight.data, -bound, bound)
            return []

    return CpuQuantizer


def linears(model):
    for i, layer in enumerate(model.model.layers):
        for part in ("self_attn", "mlp"):
            for name, mod in getattr(layer, part).named_children():
                if isinstance(mod, torch.nn.Linear):
                    yield f"model.layers.{i}.{part}.{name}.weight", mod


def save(model, quantizer, src, dst):
    """Every decoder linear through `quantizer`, as an f32 checkpoint."""
    from safetensors.torch import save_file

    with torch.no_grad():
        state = {n: t.detach().clone().float() for n, t in model.state_dict().items()}
        for name, mod in linears(model):
            state[name] = quantizer.pseudo_quantize_tensor(mod.weight.data.float())[0]
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state = {n: t.contiguous() for n, t in state.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    for f in src.iterdir():
        if f.suffix == ".json" and f.name != "model.safetensors.index.json":
            shutil.copy(f, dst / f.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=pathlib.Path, help="HF folder (f32 weights)")
    ap.add_argument("--windows", required=True, type=pathlib.Path,
                    help="calibration windows, from awq_quality --dump-calib")
    ap.add_argument("--group", type=int, default=128)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--only", choices=["asym", "sym"])
    args = ap.parse_args()

    from awq import AutoAWQForCausalLM

    windows = json.loads(args.windows.read_text())
    if not windows or len({len(w) for w in windows}) != 1:
        sys.exit(f"{args.windows}: expected windows of one length")
    quantizer = quantizer_class()
    for asym in (True, False):
        name = "asym" if asym else "sym"
        if args.only and args.only != name:
            continue
        config = {"zero_point": asym, "q_group_size": args.group, "w_bit": 4, "version": "GEMM"}
        # RTN: AutoAWQ's quantizer alone (with the block layout of change 2).
        awq = AutoAWQForCausalLM.from_pretrained(str(args.model), torch_dtype=torch.float32)
        plain = quantizer.__new__(quantizer)
        plain.group_size, plain.zero_point, plain.w_bit = args.group, asym, 4
        save(awq.model, plain, args.model, args.out / f"rtn-{name}")
        # AWQ: the searches (export_compatible: scaled and clipped, not yet quantized), then the
        # same quantizer.
        awq.quantize(
            None,
            quant_config=config,
            calib_data=windows,
            max_calib_samples=len(windows),
            max_calib_seq_len=len(windows[0]),
            export_compatible=True,
            quantizer_cls=quantizer,
        )
        save(awq.model, awq.quantizer, args.model, args.out / f"awq-{name}")
        print(f"{name}: written under {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch beside burn-gmt: what a PyTorch user writes for the same gradient mask, timed.

For a gradient g of n entries and ratio r, GMT keeps the entries with |g| >= T, where T is the
(k+1)-th smallest |g| and k = floor(r * n) (ties at T kept). Per tensor, in PyTorch:

- kthvalue: T = torch.kthvalue(|g|.flatten(), k + 1).values; torch.where(|g| < T, 0, g)
- topk:     T = torch.topk(|g|.flatten(), k + 1, largest=False, sorted=False).values.max();
            the same torch.where

Both give the same T, so their outputs must be equal (the `agree` column; `masked` is the
fraction of entries zeroed, r up to ties). Timed like benches/mask.rs: f32, one untimed run
first, then the median of 11 runs (5 for n > 4M), each ending with a device synchronisation;
`copy` is a plain g.clone(), the floor for any pass over the gradient. A row that PyTorch
cannot do (kthvalue's size limits, out of memory) says so and the run goes on.

Tables:
1. per tensor at the sizes of benches/mask.rs (1M, 16M, 45M entries; --sizes to change);
2. one step over all the parameter tensors of SmolLM2-135M (272 tensors, 134.5M entries;
   --preset small for the step benchmark's small model), as benches/step.rs builds them.

Usage: scripts/torch_anchor.py [--device cuda|cpu] [--sizes 1048576,16777216] [--preset full|small]
       [--ratio 0.3] [--skip-step]
Default device: cuda if torch sees one, else cpu. Exit status 1 when the variants disagree.
"""

import argparse
import math
import statistics
import sys
import time
import warnings

# torch warns at import when NumPy is absent; nothing here uses NumPy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
try:
    import torch
except ImportError:
    sys.exit("torch_anchor.py: PyTorch is not installed (pip install torch)")

DEFAULT_SIZES = [1 << 20, 1 << 24, 45_000_000]
SEED = 0x474D_545F
# (layers, d_model, ffn, heads, kv_heads, vocab): the presets of benches/step.rs.
PRESETS = {
    "full": (30, 576, 1536, 9, 3, 49_152),
    "small": (4, 384, 1024, 6, 2, 8_192),
}


def decoder_shapes(preset):
    """The parameter shapes of benches/step.rs's decoder, in module order."""
    layers, d, ffn, heads, kv_heads, vocab = PRESETS[preset]
    kv = d // heads * kv_heads
    shapes = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d, d), (d, kv), (d, kv), (d, d), (d,), (d, ffn), (d, ffn), (ffn, d)]
    shapes.append((d,))
    return shapes


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def masked_count(n, ratio):
    return math.floor(ratio * n)


def mask_kthvalue(g, ratio):
    a = g.abs()
    k = masked_count(a.numel(), ratio)
    t = torch.kthvalue(a.flatten(), k + 1).values
    return torch.where(a < t, torch.zeros_like(g), g)


def mask_topk(g, ratio):
    a = g.abs()
    k = masked_count(a.numel(), ratio)
    t = torch.topk(a.flatten(), k + 1, largest=False, sorted=False).values.max()
    return torch.where(a < t, torch.zeros_like(g), g)


def copy(g):
    return g.clone()


def timed(device, reps, fn):
    """Median seconds of fn() over reps runs after one untimed run, synchronised."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times)


def short(err):
    """One line of an exception, for a table cell."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return f"{type(err).__name__}: {text}"[:120].replace("|", "/")


def attempt(device, reps, fn):
    """(seconds, None) or (None, cell text) when PyTorch cannot do it."""
    try:
        return timed(device, reps, fn), None
    except (RuntimeError, MemoryError, IndexError, ValueError) as err:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None, f"failed: {short(err)}"


def cell(seconds, failure):
    return failure if seconds is None else f"{seconds * 1e3:.2f}"


def ratio_cell(seconds, base):
    return "-" if seconds is None or base is None else f"{seconds / base:.1f}"


def agreement(grads, ratio):
    """(`yes`/`NO (...)`, masked fraction) of the two variants over `grads`, untimed."""
    wrong = 0
    masked = 0
    total = 0
    for g in grads:
        a = mask_kthvalue(g, ratio)
        b = mask_topk(g, ratio)
        wrong += int((a != b).sum().item())
        masked += int((a == 0).sum().item() - (g == 0).sum().item())
        total += g.numel()
    verdict = "yes" if wrong == 0 else f"NO ({wrong} differ)"
    return verdict, masked / max(total, 1)


def gaussian(shape, device, generator):
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def per_tensor_table(device, sizes, ratio):
    print(f"\nPyTorch per-tensor mask ({device.type}), f32, ratio {ratio}: median of 11 runs "
          "(5 for n > 4M)\n")
    print("| backend | n | copy (ms) | kthvalue mask (ms) | topk mask (ms) | kthvalue / copy "
          "| topk / copy | masked | agree |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    generator = torch.Generator().manual_seed(SEED)
    ok = True
    for n in sizes:
        label = f"torch-{device.type}"
        try:
            g = gaussian((n,), device, generator)
        except (RuntimeError, MemoryError) as err:
            print(f"| {label} | {n} | failed: {short(err)} | | | | | | |", flush=True)
            continue
        reps = 5 if n > (4 << 20) else 11
        t_copy, copy_failed = attempt(device, reps, lambda: copy(g))
        t_kth, kth_failed = attempt(device, reps, lambda: mask_kthvalue(g, ratio))
        t_topk, topk_failed = attempt(device, reps, lambda: mask_topk(g, ratio))
        if kth_failed or topk_failed:
            agree, masked = "-", None
        else:
            agree, masked = agreement([g], ratio)
            ok &= agree == "yes"
        print(f"| {label} | {n} | {cell(t_copy, copy_failed)} | {cell(t_kth, kth_failed)} "
              f"| {cell(t_topk, topk_failed)} | {ratio_cell(t_kth, t_copy)} "
              f"| {ratio_cell(t_topk, t_copy)} "
              f"| {'-' if masked is None else f'{masked:.4f}'} | {agree} |", flush=True)
        del g
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return ok


def step_table(device, preset, ratio):
    shapes = decoder_shapes(preset)
    entries = sum(math.prod(s) for s in shapes)
    generator = torch.Generator().manual_seed(SEED + 1)
    grads = [gaussian(s, device, generator) * 1e-3 for s in shapes]
    print(f"\nPyTorch mask of one step ({device.type}), every parameter tensor of the `{preset}` "
          f"decoder of benches/step.rs, per-tensor thresholds, f32, ratio {ratio}: median of "
          "11 steps\n")
    print("| backend | preset | tensors | parameters | copy (ms) | kthvalue mask (ms) "
          "| topk mask (ms) | kthvalue / copy | topk / copy | masked | agree |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    reps = 11
    t_copy, copy_failed = attempt(device, reps, lambda: [copy(g) for g in grads])
    t_kth, kth_failed = attempt(device, reps, lambda: [mask_kthvalue(g, ratio) for g in grads])
    t_topk, topk_failed = attempt(device, reps, lambda: [mask_topk(g, ratio) for g in grads])
    if kth_failed or topk_failed:
        agree, masked = "-", None
    else:
        agree, masked = agreement(grads, ratio)
    print(f"| torch-{device.type} | {preset} | {len(shapes)} | {entries} "
          f"| {cell(t_copy, copy_failed)} | {cell(t_kth, kth_failed)} "
          f"| {cell(t_topk, topk_failed)} | {ratio_cell(t_kth, t_copy)} "
          f"| {ratio_cell(t_topk, t_copy)} "
          f"| {'-' if masked is None else f'{masked:.4f}'} | {agree} |", flush=True)
    return agree in ("yes", "-")


def positive_ints(text):
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or any(n <= 0 for n in sizes):
        raise argparse.ArgumentTypeError(f"positive integers, got {text!r}")
    return sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"],
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=positive_ints, default=DEFAULT_SIZES)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--skip-step", action="store_true",
                        help="only the per-tensor table")
    args = parser.parse_args()
    if not 0.0 <= args.ratio < 1.0:
        parser.error("--ratio: in [0, 1)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {device.type} ({name}), "
          f"{torch.get_num_threads()} CPU threads")
    assert len(decoder_shapes("full")) == 272, "SmolLM2-135M has 272 parameter tensors"

    ok = per_tensor_table(device, args.sizes, args.ratio)
    if not args.skip_step:
        ok &= step_table(device, args.preset, args.ratio)
    if not ok:
        print("FAILED: the kthvalue and topk masks differ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

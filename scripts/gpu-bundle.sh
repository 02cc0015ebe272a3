#!/usr/bin/env bash
# Builds, on a CPU machine without CUDA, everything the GPU check runs, into one compressed
# bundle for a GPU machine that has no network:
#
#   scripts/gpu-bundle.sh [OUTDIR]      # default OUTDIR: gpu-bundle (ignored by git)
#   scripts/gpu-bundle.sh --dry-run     # print the plan and the commands, build nothing
#
# then, on the GPU machine, from a checkout of the same commit:
#
#   scripts/gpu-check.sh --bundle OUTDIR/gmt-gpu-bundle.tar.xz
#
# Contents (built with `--features cuda-nvrtc,wgpu`, dev profile, stripped):
# - bin/tests/: the GPU test binaries (burn-gmt's integration tests and grad_mask_launches,
#   the kernels' gpu_kernels and gpu_launches);
# - bin/benches/: the benchmarks mask (with its breakdown mode) and step;
# - bin/examples/: gmt_study, and llm when the tree has examples/llm;
# - lib/libllvmstub.so (+ its source and version script): see below; lib/libvulkan.so.1 from
#   this machine when there is one (wgpu's Vulkan loader; the GPU machine's NVIDIA driver
#   brings the ICD);
# - scripts/torch_anchor.py; MANIFEST.txt (commit, toolchain, sizes and SHA-256 of each file).
#
# How (the recipe of shared/notes/cuda-offline.md, verified on an H200): cubecl-cuda depends on
# cubecl-llvm, whose build script downloads a prebuilt LLVM. DOCS_RS=1 makes it skip that, and
# `--unresolved-symbols=ignore-all` links the binaries with the LLVM C API (and four cubecl_*
# shims) unresolved. The `cuda-nvrtc` feature compiles kernels with NVRTC, so LLVM is never
# called; the stub library only satisfies the loader (each stub aborts) and gpu-check.sh
# LD_PRELOADs it. Its symbols are versioned (GMT_LLVM_STUB) so that they do not stand in for
# the LLVM of a Mesa driver in the same process, which the recipe's unversioned stub aborted.
# CUDARC_CUDA_VERSION pins the CUDA API cudarc binds (default 13000: the H200's
# driver is CUDA 13.0; set it to the GPU machine's driver version, e.g. 12040 for 12.4).
#
# Own target directory (DOCS_RS and RUSTFLAGS change artifacts): GMT_BUNDLE_TARGET_DIR, default
# $HOME/.cache/burn-gmt-target-cuda. A cold build takes about 30 minutes on 2 cores; `xz -9`
# with a dictionary spanning several binaries (they share most of their code) a few more.
# Fails when the bundle is not under 60 MB (what a device session can carry).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."

dry_run=false
out_dir=gpu-bundle
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=true ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu-bundle.sh: unknown option '$arg'" >&2; exit 2 ;;
        *) out_dir=$arg ;;
    esac
done

readonly name=gmt-gpu-bundle
readonly max_bytes=60000000
readonly features=cuda-nvrtc,wgpu
export CARGO_TARGET_DIR="${GMT_BUNDLE_TARGET_DIR:-$HOME/.cache/burn-gmt-target-cuda}"
export DOCS_RS=1
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
export RUSTFLAGS="-C link-arg=-Wl,--unresolved-symbols=ignore-all"

die() { echo "gpu-bundle.sh: $*" >&2; exit 1; }
section() { printf '\n=== %s ===\n' "$*"; }

for tool in cargo python3 gcc nm strip xz tar sha256sum ldd; do
    command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done

# The GPU test files, and the llm example when this tree has it (an example of the root
# package, `examples/llm/main.rs`, whose library crate burn-gmt-llm gets CUDA through the root
# package's features).
# The GPU tests live beside their crates: burn-gmt's integration binary (its `gpu` module with
# the rest of burn-gmt's integration tests), the kernels' gpu_kernels and gpu_launches, and
# burn-gmt's grad_mask_launches (the launch counts, binaries of their own: the counter is
# process-wide).
gpu_tests=()
for file in burn-gmt/tests/integration/main.rs burn-gmt-kernels/tests/gpu_kernels.rs \
    burn-gmt-kernels/tests/gpu_launches.rs burn-gmt/tests/grad_mask_launches.rs; do
    [[ -e $file ]] || die "no $file"
done
gpu_tests=(--test integration --test gpu_kernels --test gpu_launches --test grad_mask_launches)
targets=("${gpu_tests[@]}" --bench mask --bench step --example gmt_study)
examples=1
if [[ -f examples/llm/main.rs ]]; then
    targets+=(--example llm)
    examples=2
fi
build=(cargo build --profile dev --locked --workspace --features "$features"
    "${targets[@]}" --message-format=json-render-diagnostics)

section "plan"
echo "out: $out_dir/$name.tar.xz (must be < $max_bytes bytes)"
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR DOCS_RS=$DOCS_RS CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION"
echo "RUSTFLAGS=\"$RUSTFLAGS\""
echo "${build[*]}"
if $dry_run; then
    echo "(dry run: nothing built)"
    exit 0
fi

section "build"
start=$SECONDS
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# cargo's JSON messages on stdout (one line per artifact), its progress and diagnostics on
# stderr; the executables are the artifacts with an "executable" path.
"${build[@]}" >"$work/messages.json" || die "cargo build failed (see above)"
echo "build: $((SECONDS - start)) s"

stage=$work/$name
mkdir -p "$stage"/{bin/tests,bin/benches,bin/examples,lib,scripts}
# One line per executable: `kind name path`, kind from cargo's target kind.
python3 - "$work/messages.json" >"$work/executables.txt" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
        kind = msg["target"]["kind"][0]
        if kind in ("test", "bench", "example", "bin"):
            print(kind, msg["target"]["name"], msg["executable"])
PY
declare -A dir_of=([test]=tests [bench]=benches [example]=examples [bin]=examples)
count=0
while read -r kind target path; do
    dir=${dir_of[$kind]:-}
    [[ -n $dir ]] || die "unexpected artifact kind '$kind' ($path)"
    cp "$path" "$stage/bin/$dir/$target"
    strip "$stage/bin/$dir/$target"
    count=$((count + 1))
done <"$work/executables.txt"
expected=$((${#gpu_tests[@]} / 2 + 2 + examples))
((count >= expected)) ||
    die "found $count executables in cargo's output, expected at least $expected"
mapfile -t binaries < <(find "$stage/bin" -type f | sort)

section "LLVM stub"
# Every LLVM C API function and cubecl shim the binaries leave unresolved gets a body that
# aborts: NVRTC never calls them, the loader only needs them defined (Rust calls external
# functions through the GOT, bound at load). The stub's symbols carry a version of their own,
# so they satisfy only the binaries' unversioned references: a Mesa driver that wgpu loads into
# the same process (llvmpipe, lavapipe) asks for versioned ones (`LLVMContextCreate@LLVM_15`)
# and still gets its own LLVM, where an unversioned stub aborted it.
nm -D --undefined-only "${binaries[@]}" 2>/dev/null | awk 'NF >= 2 {print $NF}' |
    sed 's/@.*//' | grep -E '^(LLVM|cubecl_)' | sort -u >"$work/symbols.txt" || true
symbols=$(wc -l <"$work/symbols.txt")
((symbols > 0)) || die "no unresolved LLVM symbols found: was the build made with cuda?"
{
    echo "/* Generated by scripts/gpu-bundle.sh: $symbols symbols that the cuda binaries leave"
    echo "   unresolved (cubecl-llvm built with DOCS_RS=1); NVRTC builds never call them. */"
    echo "#include <stdlib.h>"
    awk '{printf "void %s(void) { abort(); }\n", $1}' "$work/symbols.txt"
} >"$stage/lib/llvmstub.c"
echo 'GMT_LLVM_STUB { global: *; };' >"$stage/lib/llvmstub.map"
gcc -shared -fPIC -O1 -Wl,--version-script="$stage/lib/llvmstub.map" \
    -o "$stage/lib/libllvmstub.so" "$stage/lib/llvmstub.c"
echo "$symbols symbols"
# With the stub, no symbol may be left undefined, and every test binary must start.
for binary in "${binaries[@]}"; do
    if LD_PRELOAD="$stage/lib/libllvmstub.so" ldd -r "$binary" 2>&1 | grep -q 'undefined symbol'; then
        LD_PRELOAD="$stage/lib/libllvmstub.so" ldd -r "$binary" 2>&1 | grep 'undefined symbol' | head -5
        die "$(basename "$binary"): symbols still undefined with the stub"
    fi
done
for binary in "$stage"/bin/tests/*; do
    LD_PRELOAD="$stage/lib/libllvmstub.so" "$binary" --list >/dev/null 2>"$work/load.txt" || {
        head -5 "$work/load.txt"
        die "$(basename "$binary") does not start with the stub"
    }
done
echo "every binary loads with the stub (ldd -r), every test binary lists its tests"

vulkan=$(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*/libvulkan\.so\.1$' | head -1 || true)
if [[ -n $vulkan ]]; then
    cp -L "$vulkan" "$stage/lib/libvulkan.so.1"
else
    echo "NOTE: no libvulkan.so.1 here: wgpu on the GPU machine needs its own Vulkan loader"
fi
cp scripts/torch_anchor.py "$stage/scripts/"

{
    echo "burn-gmt GPU bundle"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "toolchain: $(rustc --version)"
    echo "features: $features (NVRTC compiler); profile dev"
    echo "CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION (the newest CUDA API the driver must support)"
    echo "LLVM stub: $symbols symbols (version GMT_LLVM_STUB)"
    echo "run: scripts/gpu-check.sh --bundle $name.tar.xz (or the extracted directory)"
    echo
    echo "files (bytes, sha256):"
    (cd "$stage" && find . -type f ! -name MANIFEST.txt | sort | while read -r f; do
        printf '%s %s %s\n' "${f#./}" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
    done)
} >"$stage/MANIFEST.txt"
cat "$stage/MANIFEST.txt"

section "compress"
mkdir -p "$out_dir"
bundle=$out_dir/$name.tar.xz
raw=$(du -sb "$stage" | cut -f1)
# The binaries share most of their code (Burn, CubeCL): a dictionary larger than one binary
# lets xz find it again in the next one. Decompressing needs about that much memory.
start=$SECONDS
tar -C "$work" -cf - "$name" | xz -9 --lzma2=preset=9,dict=256MiB -T1 >"$bundle.tmp"
mv "$bundle.tmp" "$bundle"
size=$(stat -c %s "$bundle")
echo "$bundle: $size bytes ($raw bytes uncompressed; xz $((SECONDS - start)) s)"
if ((size >= max_bytes)); then
    die "bundle is $size bytes, over the limit of $max_bytes: drop a binary or raise the limit"
fi
echo "OK: under $max_bytes bytes"

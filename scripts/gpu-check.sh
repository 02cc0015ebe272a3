#!/usr/bin/env bash
# GPU check of burn-gmt on a CUDA machine, run once from the repository root:
#
#   scripts/gpu-check.sh            # everything: build, tests, benchmark
#   scripts/gpu-check.sh build      # or one stage: build | test | bench (several may be given)
#
# 1. prints the GPU (`nvidia-smi`) and what the CUDA run time will find;
# 2. builds the workspace and every target with `--features cuda` (flex stays on);
# 3. runs the whole test suite with `BURN_DEVICE=cuda` (makes `Device::default()` the GPU) and
#    `GMT_REQUIRE_GPU=1`: the GPU tests (tests/gpu.rs, tests/gpu_kernels.rs: every kernel
#    against the host reference) run on CUDA and fail rather than skip without a device;
# 4. runs the mask benchmark on cuda and flex (`GMT_BENCH_BACKENDS=cuda,flex`), dev profile,
#    which also checks each mask's output against a host selection (the `exact` column), and
#    prints its table last. Exit status 1 when a test fails, cuda is skipped or a mask is wrong.
#
# Time: from a cold target directory on a 16-core machine, roughly 10-15 minutes (building
# Burn with CUDA is most of it; the tests take a few minutes, the benchmark 1-2: kernel
# compilation by NVRTC at first use, then 1M/16M/45M entries, the sort baseline time-limited by
# GMT_BENCH_SORT_TIMEOUT, default 60 s a sort). With a warm target directory, a few minutes.
# Under a per-command time limit, run the stages as separate calls on the same machine.
#
# Building needs no CUDA SDK: cubecl-cuda 0.11.3 asks cudarc 0.19 for
# `fallback-dynamic-loading` (turned into `dynamic-loading` by cudarc's build script when no
# linking feature is set), so nothing links against libcuda/libnvrtc; libcuda.so and
# libnvrtc.so are opened with dlopen at run time. Without `nvcc` on PATH,
# `cuda-version-from-build-system` + `fallback-latest` make cudarc bind the newest CUDA API it
# knows (13.4); this script pins CUDARC_CUDA_VERSION to the driver's version instead (from
# nvidia-smi), so no symbol newer than the driver is bound.
# But building DOES need network once (or a prepared cache): cubecl-cuda 0.11.3 depends,
# non-optionally, on cubecl-llvm (`nvptx`), whose build dependency tracel-llvm-bundler 23.1.0-4
# downloads a prebuilt LLVM from github.com/tracel-ai/tracel-llvm/releases (v23.1.0-4,
# linux-x64.tar.xz + linux-x64.checksums.json) into ~/.cache/tracel and extracts it to
# ${XDG_DATA_HOME:-~/.local/share}/tracel/tracel-llvm-23.1.0-4 (done once: the sentinel file
# .tracel-llvm-installed there skips it). Offline, copy that extracted directory (sentinel
# included) from a machine that built it, or put both files in ~/.cache/tracel named
# tracel-llvm-23.1.0-4-linux-x64.{tar.xz,checksums.json} and set
# TRACEL_LLVM_BUNDLER_SKIP_CHECKSUM_DOWNLOAD=1.
# Running does need, besides the NVIDIA driver (libcuda.so): libnvrtc.so (CUDA toolkit, or the
# nvidia-cuda-nvrtc wheel on LD_LIBRARY_PATH) and a CUDA directory for kernel headers
# (cuda_fp16.h, ...): $CUDA_PATH, else /usr/local/cuda, /opt/cuda, or /usr (if /usr/bin/nvcc);
# cubecl-cuda panics when it compiles its first kernel without one.
#
# Environment: CARGO_TARGET_DIR (default $HOME/.cache/burn-gmt-target), GMT_CARGO_FLAGS
# (extra cargo flags, e.g. --offline), GMT_BENCH_SIZES / GMT_BENCH_SORT /
# GMT_BENCH_SORT_TIMEOUT (see benches/mask.rs), GMT_CHECK_LOG_DIR (logs; default $OUT/gpu-check
# when $OUT is set, else a temporary directory).
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/burn-gmt-target}"
read -r -a cargo_flags <<<"${GMT_CARGO_FLAGS:-}"
if [[ -n "${GMT_CHECK_LOG_DIR:-}" ]]; then
    log_dir=$GMT_CHECK_LOG_DIR
elif [[ -n "${OUT:-}" ]]; then
    log_dir=$OUT/gpu-check
else
    log_dir=$(mktemp -d)
fi
mkdir -p "$log_dir"

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(build test bench)
for stage in "${stages[@]}"; do
    case $stage in
        build | test | bench) ;;
        *) echo "unknown stage '$stage' (build, test, bench)" >&2; exit 2 ;;
    esac
done
wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }

section() { printf '\n=== %s ===\n' "$*"; }

# The largest CUDA version cudarc 0.19 binds that is not newer than $1 ("12.4" -> 12040).
cudarc_version_for() {
    local major=${1%%.*} minor=${1#*.} best=""
    local want=$((major * 1000 + minor * 10))
    for v in 11040 11050 11060 11070 11080 12000 12010 12020 12030 12040 12050 12060 12080 \
        12090 13000 13010 13020 13030 13040; do
        ((v <= want)) && best=$v
    done
    echo "$best"
}

section "machine"
echo "repo: $(pwd) @ $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR, logs in $log_dir"
cargo --version
if command -v nvidia-smi >/dev/null; then
    nvidia-smi || true
    driver_cuda=$(nvidia-smi 2>/dev/null | grep -oE 'CUDA Version: [0-9]+\.[0-9]+' | head -1 |
        awk '{print $3}' || true)
else
    echo "nvidia-smi: not found"
    driver_cuda=""
fi
# Use the toolkit's nvcc when it is installed but not on PATH (cudarc then reads its version).
cuda_dir=${CUDA_PATH:-/usr/local/cuda}
if ! command -v nvcc >/dev/null && [[ -x $cuda_dir/bin/nvcc ]]; then
    export PATH="$cuda_dir/bin:$PATH"
fi
if command -v nvcc >/dev/null; then
    echo "nvcc: $(nvcc --version | grep -oE 'release [0-9.]+' || echo '?') (cudarc binds its version)"
elif [[ -z "${CUDARC_CUDA_VERSION:-}" && -n "$driver_cuda" ]]; then
    pinned=$(cudarc_version_for "$driver_cuda")
    if [[ -n "$pinned" ]]; then
        export CUDARC_CUDA_VERSION=$pinned
        echo "nvcc: not found; driver supports CUDA $driver_cuda: CUDARC_CUDA_VERSION=$pinned"
    fi
fi
echo "libcuda: $(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*libcuda\.so[.0-9]*' | head -1 || true)"
echo "libnvrtc: $(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*libnvrtc\.so[.0-9]*' | head -1 || true)" \
    "(also searched: LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})"
if [[ -n "${CUDA_PATH:-}" ]]; then
    echo "CUDA headers: CUDA_PATH=$CUDA_PATH"
elif [[ -d /usr/local/cuda || -d /opt/cuda || -e /usr/bin/nvcc ]]; then
    echo "CUDA headers: found a default CUDA directory"
else
    echo "WARNING: no CUDA_PATH, /usr/local/cuda, /opt/cuda or /usr/bin/nvcc:" \
        "cubecl-cuda cannot compile kernels (set CUDA_PATH)"
fi

llvm_dir=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
if [[ -e $llvm_dir/.tracel-llvm-installed ]]; then
    echo "LLVM bundle (cubecl-llvm): $llvm_dir"
else
    echo "NOTE: no LLVM bundle in $llvm_dir: the cuda build downloads it from github.com" \
        "(tracel-llvm v23.1.0-4) and fails offline; see the comment at the top of this script"
fi

status=0
if wants build; then
    section "build (--features cuda)"
    start=$SECONDS
    cargo build "${cargo_flags[@]}" --workspace --all-targets --features cuda 2>&1 |
        tee "$log_dir/build.log"
    echo "build: $((SECONDS - start)) s"
fi

if wants test; then
    section "tests (BURN_DEVICE=cuda, GMT_REQUIRE_GPU=1, --features cuda)"
    start=$SECONDS
    if BURN_DEVICE=cuda GMT_REQUIRE_GPU=1 cargo test "${cargo_flags[@]}" --workspace \
        --features cuda 2>&1 |
        tee "$log_dir/test.log"; then
        test_result=ok
    else
        test_result=FAILED
        status=1
    fi
    awk '/^test result:/ { p += $4; f += $6; i += $8 }
         END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, i }' "$log_dir/test.log"
    echo "tests: $test_result in $((SECONDS - start)) s"
fi

if wants bench; then
    section "benchmark (cuda, flex)"
    start=$SECONDS
    if GMT_BENCH_BACKENDS="${GMT_BENCH_BACKENDS:-cuda,flex}" cargo bench "${cargo_flags[@]}" \
        --profile dev --features cuda --bench mask 2>&1 | tee "$log_dir/bench.log"; then
        bench_result=ok
    else
        bench_result=FAILED
        status=1
    fi
    if grep -q '^skipped: cuda' "$log_dir/bench.log"; then
        echo "FAILED: the benchmark found no CUDA device (see 'skipped: cuda' below)"
        status=1
    fi
    if grep -E '^\| cuda \|' "$log_dir/bench.log" | grep -q '| NO'; then
        echo "FAILED: the cuda mask differs from the host selection ('exact' column)"
        status=1
    fi
    echo "benchmark: $bench_result in $((SECONDS - start)) s"
    section "benchmark table"
    # The benchmark's own report: skipped backends, header, device lines and the table.
    sed -n '/^skipped: /p; /^GMT per-tensor mask/,$p' "$log_dir/bench.log" |
        grep -E '^(skipped: |GMT |- |\||$)' || true
fi
exit "$status"

#!/usr/bin/env bash
# GPU check of burn-gmt on a CUDA machine, run once from the repository root:
#
#   scripts/gpu-check.sh            # everything: build, tests, benchmark
#   scripts/gpu-check.sh build      # or one stage: build | test | bench (several may be given)
#   scripts/gpu-check.sh --bundle gpu-bundle/gmt-gpu-bundle.tar.xz   # no build: see below
#
# With --bundle PATH (the bundle of scripts/gpu-bundle.sh, its .tar.xz or the extracted
# directory), nothing is built and no network or Rust toolchain is needed: it runs, from the
# bundle, the GPU test binaries (BURN_DEVICE=cuda, GMT_REQUIRE_GPU=1), the mask benchmark
# (cuda, wgpu; then cuda with f16 gradients, GMT_BENCH_F16_SIZES; then cuda at 268M entries), the
# per-step breakdown of one mask (cuda; where the per-tensor time goes), the
# step benchmark (wgpu then cuda, so its last line is cuda's), the PyTorch
# anchor (scripts/torch_anchor.py, when python3 has torch) and a smoke run of the GMT study on
# cuda, each under a time-out and all within GMT_CHECK_BUDGET_S (default 450 s), then prints
# the test totals, every table and, last, the three GPU figures of issue 21 by name (the mask
# of 268M entries in copies, the per-tensor mask up to 1M entries in µs, GradMask::apply over
# SmolLM2-135M's tensors in ms). The bundle's binaries leave LLVM symbols unresolved
# (NVRTC never calls them): its lib/libllvmstub.so is LD_PRELOADed. CUDA_PATH defaults to
# /usr/local/cuda; the directory of libnvrtc.so (never a stubs/ directory, whose libcuda.so
# stub fails) is put on LD_LIBRARY_PATH, and the bundle's libvulkan.so.1 when the machine has
# no Vulkan loader. Environment: GMT_BENCH_SIZES (mask benchmark and anchor sizes; default
# 4096 to 45M), GMT_STEP_PRESET (default full), GMT_CHECK_STUDY_PRESET (default smoke),
# GMT_CHECK_LLM_MODEL (the SmolLM2 GGUF; default models/SmolLM2-135M-Instruct.Q4_1.gguf: when
# it is there and the bundle has the llm example, `llm finetune --preset gpu --device cuda` runs,
# report in $log_dir/llm), GMT_CHECK_LLM_ARGS (other arguments for it), GMT_CHECK_LLM_TIMEOUT_S
# (default 300), GMT_CHECK_PYTHON (default python3).
#
# 1. prints the GPU (`nvidia-smi`) and what the CUDA run time will find;
# 2. builds the workspace and every target with `--features cuda` (flex stays on);
# 3. runs the whole test suite with `BURN_DEVICE=cuda` (makes `Device::default()` the GPU) and
#    `GMT_REQUIRE_GPU=1`: the GPU tests (burn-gmt/tests/integration/gpu.rs,
#    burn-gmt-kernels/tests/gpu_kernels.rs: every kernel
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
caller_dir=$PWD
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

bundle=""
stages=()
while (($# > 0)); do
    case $1 in
        --bundle)
            [[ $# -ge 2 ]] || { echo "--bundle needs a path" >&2; exit 2; }
            bundle=$2
            shift 2
            ;;
        build | test | bench) stages+=("$1"); shift ;;
        *) echo "unknown argument '$1' (build, test, bench, --bundle PATH)" >&2; exit 2 ;;
    esac
done
if [[ -n $bundle && ${#stages[@]} -gt 0 ]]; then
    echo "--bundle runs everything from the bundle: no stages with it" >&2
    exit 2
fi
[[ ${#stages[@]} -eq 0 ]] && stages=(build test bench)
[[ -z $bundle || $bundle == /* ]] || bundle=$caller_dir/$bundle
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
if [[ -n $bundle ]]; then
    echo "bundle: $bundle, logs in $log_dir"
else
    echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR, logs in $log_dir"
    cargo --version
fi
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

if [[ -z $bundle ]]; then
    llvm_dir=${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4
    if [[ -e $llvm_dir/.tracel-llvm-installed ]]; then
        echo "LLVM bundle (cubecl-llvm): $llvm_dir"
    else
        echo "NOTE: no LLVM bundle in $llvm_dir: the cuda build downloads it from github.com" \
            "(tracel-llvm v23.1.0-4) and fails offline; see the comment at the top of this script"
    fi
fi

# A benchmark's own report from its log (skipped backends, header, device lines, table and
# closing line), from the line matching $2 on.
bench_report() {
    sed -n "/^skipped: /p; /$2/,\$p" "$1" |
        grep -E '^(skipped: |GMT |One |Per-tensor |PyTorch |torch |- |\||$|step overhead:)' || true
}

# The cell under column $3 of the table rows of backend $2 in benchmark log $1 (columns found
# by their header names, so added columns do not move them), one per row; with $4 (and $5),
# only the rows whose column `n` is at most $4 (and at least $5).
table_column() {
    awk -F'|' -v backend="$2" -v column="$3" -v max_n="${4:-}" -v min_n="${5:-}" '
        function trim(s) { gsub(/^ +| +$/, "", s); return s }
        /^\| backend \|/ { for (i = 2; i < NF; i++) { name[trim($i)] = i } ; next }
        trim($2) == backend && (column in name) {
            if (max_n != "" || min_n != "") {
                if (!("n" in name)) next
                n = trim($(name["n"])) + 0
                if ((max_n != "" && n > max_n + 0) || (min_n != "" && n < min_n + 0)) next
            }
            print trim($(name[column]))
        }' "$1" 2>/dev/null || true
}

# One figure: "NAME: VALUE UNIT (target: TARGET)", or "not measured" without a value.
figure() {
    if [[ -n $2 ]]; then
        echo "$1: $2 $3 (target: $4)"
    else
        echo "$1: not measured (target: $4 $3)"
    fi
}

# The three GPU figures of issue 21, by name, from the benchmark logs given (the mask
# benchmark's at 268M entries, the mask benchmark's up to 1M entries, the step benchmark's).
gpu_figures() {
    local at_268m=$1 per_tensor=$2 step=$3 n=268435456
    section "GPU figures (cuda)"
    figure "mask of 268M entries" \
        "$(table_column "$at_268m" cuda "mask / copy" "$n" "$n" | tail -1)" copies "at most 1.2"
    figure "per-tensor mask up to 1M entries" \
        "$(table_column "$per_tensor" cuda "GMT mask (ms)" 1048576 | sort -g | tail -1 |
            awk '$1 + 0 > 0 { printf "%.0f", $1 * 1000 }')" µs "at most 60"
    figure "GradMask::apply over SmolLM2-135M's 272 tensors (step preset ${GMT_STEP_PRESET:-full})" \
        "$(table_column "$step" cuda "apply (ms)" | tail -1)" ms "at most 2"
}

# Test totals over cargo test logs.
test_totals() {
    awk '/^test result:/ { p += $4; f += $6; i += $8 }
         END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, i }' "$@"
}

# Whether the mask benchmark's log shows cuda run and every cuda mask exact; says why not.
mask_bench_ok() {
    local ok=0
    if grep -q '^skipped: cuda' "$1"; then
        echo "FAILED: the benchmark found no CUDA device (see 'skipped: cuda' below)"
        ok=1
    fi
    if grep -E '^\| cuda \|' "$1" | grep -q '| NO'; then
        echo "FAILED: the cuda mask differs from the host selection ('exact' column)"
        ok=1
    fi
    return "$ok"
}

# The directory holding libnvrtc.so: the toolkit's, the system's, or the nvidia-cuda-nvrtc
# wheel's; never a stubs/ directory.
nvrtc_dir() {
    local dir
    for dir in "$CUDA_PATH/targets/x86_64-linux/lib" "$CUDA_PATH/lib64" \
        /usr/local/cuda*/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu; do
        if compgen -G "$dir/libnvrtc.so*" >/dev/null; then
            echo "$dir"
            return
        fi
    done
    dir=$(ldconfig -p 2>/dev/null | grep -oE '/[^ ]*libnvrtc\.so[.0-9]*' | grep -v /stubs/ |
        head -1 || true)
    if [[ -n $dir ]]; then
        dirname "$dir"
        return
    fi
    python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(nvidia.cuda_nvrtc.__path__[0], "lib"))' \
        2>/dev/null || true
}

# Bundle mode: everything from the bundle, each step under a time-out within one budget.
run_bundle() {
    # OUTDIR of gpu-bundle.sh, the .tar.xz in it, or the extracted gmt-gpu-bundle directory.
    if [[ -d $bundle && ! -f $bundle/MANIFEST.txt ]]; then
        if [[ -f $bundle/gmt-gpu-bundle/MANIFEST.txt ]]; then
            bundle=$bundle/gmt-gpu-bundle
        elif [[ -f $bundle/gmt-gpu-bundle.tar.xz ]]; then
            bundle=$bundle/gmt-gpu-bundle.tar.xz
        fi
    fi
    local root=$bundle
    if [[ -f $bundle ]]; then
        unpack_dir=$(mktemp -d)
        trap 'rm -rf "$unpack_dir"' EXIT
        echo "unpacking $bundle"
        tar -C "$unpack_dir" -xJf "$bundle"
        root=$unpack_dir/gmt-gpu-bundle
    fi
    [[ -f $root/MANIFEST.txt ]] || { echo "no bundle at $bundle (MANIFEST.txt missing)" >&2; exit 2; }
    sed -n '1,/^$/p' "$root/MANIFEST.txt"

    export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
    local nvrtc
    nvrtc=$(nvrtc_dir)
    if [[ -n $nvrtc ]]; then
        export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        echo "WARNING: no libnvrtc.so found: cuda cannot compile kernels (set LD_LIBRARY_PATH)"
    fi
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' && [[ -f $root/lib/libvulkan.so.1 ]]; then
        export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$root/lib"
        echo "Vulkan loader: the bundle's"
    fi
    echo "CUDA_PATH=$CUDA_PATH LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
    # Only the Rust binaries get the stub: its LLVM symbols must not stand in for others'. (Its
    # symbols are versioned, so a Mesa driver wgpu loads into the process keeps its own LLVM.)
    local rust_env=(env "LD_PRELOAD=$root/lib/libllvmstub.so" BURN_DEVICE=cuda GMT_REQUIRE_GPU=1)
    local sizes=${GMT_BENCH_SIZES:-4096,65536,1048576,16777216,45000000}
    local deadline=$((${GMT_CHECK_BUDGET_S:-450}))
    local -a summary=()
    local -a test_logs=()

    # run_step NAME TIME-OUT LOG COMMAND...: the time-out shrinks to what the budget has left.
    run_step() {
        local name=$1 limit=$2 log=$3 rc=0 begin=$SECONDS
        shift 3
        local left=$((deadline - SECONDS))
        if ((left < 20)); then
            summary+=("$name: skipped (the ${deadline} s budget is spent)")
            echo "skipped: no time left" >"$log"
            return 0
        fi
        ((limit > left)) && limit=$left
        section "$name (time-out $limit s)"
        timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log" || rc=$?
        local verdict=ok
        if ((rc == 124 || rc == 137)); then
            verdict="TIMED OUT after $limit s"
        elif ((rc != 0)); then
            verdict="FAILED (exit $rc)"
        fi
        [[ $verdict == ok ]] || status=1
        summary+=("$name: $verdict in $((SECONDS - begin)) s")
    }

    local bin
    for bin in "$root"/bin/tests/*; do
        local name
        name=$(basename "$bin")
        test_logs+=("$log_dir/test-$name.log")
        run_step "tests/$name.rs" 150 "$log_dir/test-$name.log" "${rust_env[@]}" "$bin"
    done
    run_step "mask benchmark" 100 "$log_dir/bench-mask.log" "${rust_env[@]}" \
        GMT_BENCH_BACKENDS="${GMT_BENCH_BACKENDS:-cuda,wgpu}" GMT_BENCH_SIZES="$sizes" \
        GMT_BENCH_SORT="${GMT_BENCH_SORT:-0}" "$root/bin/benches/mask"
    if ! mask_bench_ok "$log_dir/bench-mask.log"; then
        status=1
        summary+=("mask benchmark: FAILED (cuda skipped, or a cuda mask not exact)")
    fi
    # f16 keys are where CUDA first disagreed with the host (NaN payloads): time and check them.
    run_step "mask benchmark (f16)" 40 "$log_dir/bench-mask-f16.log" "${rust_env[@]}" \
        GMT_BENCH_BACKENDS=cuda GMT_BENCH_DTYPE=f16 GMT_BENCH_SORT=0 \
        GMT_BENCH_SIZES="${GMT_BENCH_F16_SIZES:-4096,1048576,16777216}" "$root/bin/benches/mask"
    if ! mask_bench_ok "$log_dir/bench-mask-f16.log"; then
        status=1
        summary+=("mask benchmark (f16): FAILED (cuda skipped, or a cuda mask not exact)")
    fi
    # The copy target's size: 268M f32 entries (1 GiB), cuda only, nothing else in the run.
    run_step "mask benchmark (268M)" 60 "$log_dir/bench-mask-268m.log" "${rust_env[@]}" \
        GMT_BENCH_BACKENDS=cuda GMT_BENCH_SIZES=268435456 GMT_BENCH_SORT=0 \
        "$root/bin/benches/mask"
    run_step "breakdown benchmark" 40 "$log_dir/bench-breakdown.log" "${rust_env[@]}" \
        GMT_BENCH_BACKENDS="${GMT_BREAKDOWN_BACKENDS:-cuda}" GMT_BENCH_BREAKDOWN=1 \
        "$root/bin/benches/mask"
    run_step "step benchmark" 120 "$log_dir/bench-step.log" "${rust_env[@]}" \
        GMT_BENCH_BACKENDS="${GMT_STEP_BACKENDS:-wgpu,cuda}" \
        GMT_STEP_PRESET="${GMT_STEP_PRESET:-full}" "$root/bin/benches/step"
    local python=${GMT_CHECK_PYTHON:-python3}
    if "$python" -c 'import torch' 2>/dev/null; then
        run_step "PyTorch anchor" 60 "$log_dir/torch.log" \
            "$python" "$root/scripts/torch_anchor.py" --sizes "$sizes" \
            --preset "${GMT_STEP_PRESET:-full}"
    else
        summary+=("PyTorch anchor: skipped ($python has no torch here)")
        echo "skipped: $python has no torch here" >"$log_dir/torch.log"
    fi
    local preset=${GMT_CHECK_STUDY_PRESET:-smoke}
    run_step "GMT study (cuda, preset $preset, 1 seed)" 60 "$log_dir/study.log" \
        "${rust_env[@]}" "$root/bin/examples/gmt_study" --device cuda --preset "$preset" \
        --seeds 1 --out "$log_dir/study"
    # The LLM fine-tuning at its gpu preset (all 30 blocks trained), when the bundle has the
    # example and the model file is there (scripts/fetch-smollm2.sh; GMT_CHECK_LLM_MODEL).
    local llm_model=${GMT_CHECK_LLM_MODEL:-$caller_dir/models/SmolLM2-135M-Instruct.Q4_1.gguf}
    local llm_default="finetune --preset gpu --device cuda --model $llm_model --out $log_dir/llm"
    if [[ -x $root/bin/examples/llm && ( -n ${GMT_CHECK_LLM_ARGS:-} || -f $llm_model ) ]]; then
        local -a llm_args
        read -r -a llm_args <<<"${GMT_CHECK_LLM_ARGS:-$llm_default}"
        run_step "llm example" "${GMT_CHECK_LLM_TIMEOUT_S:-300}" "$log_dir/llm.log" \
            "${rust_env[@]}" "$root/bin/examples/llm" "${llm_args[@]}"
    fi

    section "summary (logs in $log_dir)"
    printf '%s\n' "${summary[@]}"
    test_totals "${test_logs[@]}"
    section "mask benchmark"
    bench_report "$log_dir/bench-mask.log" '^GMT per-tensor mask'
    bench_report "$log_dir/bench-mask-f16.log" '^GMT per-tensor mask'
    section "breakdown benchmark"
    bench_report "$log_dir/bench-breakdown.log" '^Per-tensor GMT mask'
    section "step benchmark"
    bench_report "$log_dir/bench-step.log" '^One AdamW step'
    section "PyTorch anchor"
    bench_report "$log_dir/torch.log" '^torch '
    gpu_figures "$log_dir/bench-mask-268m.log" "$log_dir/bench-mask.log" "$log_dir/bench-step.log"
}

status=0
if [[ -n $bundle ]]; then
    run_bundle
    exit "$status"
fi

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
    test_totals "$log_dir/test.log"
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
    mask_bench_ok "$log_dir/bench.log" || status=1
    echo "benchmark: $bench_result in $((SECONDS - start)) s"
    section "benchmark table"
    bench_report "$log_dir/bench.log" '^GMT per-tensor mask'
    gpu_figures "$log_dir/bench.log" "$log_dir/bench.log" "$log_dir/bench-step.log"
fi
exit "$status"

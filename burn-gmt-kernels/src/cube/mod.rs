//! `MaskOps` on the CubeCL backend (wgpu, Vulkan, Metal, WebGPU, CUDA, ROCm), and through the
//! macro-generated `Fusion` implementation on `Fusion<CubeBackend>`, which is what a wgpu or
//! CUDA device is by default. The kernels are written once for every CubeCL runtime.
//!
//! # Kernel families
//!
//! Each file holds its `#[cube]` code next to the function that checks the buffers it is given
//! and launches it:
//! - [`histogram`]: one radix pass of the exact selection, a 16-bit digit histogram of the
//!   `|x|` keys that share the pass's key prefix, counted in shared memory per cube (a window
//!   of bins around the cube's sampled median digit) and merged with global atomics; the
//!   prefix comes from the host or from the selection buffer in device memory.
//! - [`radix`]: the steps around the histogram passes: starting a selection buffer, the digit
//!   step (one cube per selection scans its 65,536 bins, appends the digit to the prefix,
//!   records the counts and clears the bins) and the threshold write.
//! - [`small`]: the whole selection of a tensor of at most 4,096 entries in one launch (keys
//!   in one cube's shared memory, 8-bit digits), for the small tensors whose cost is launches;
//!   also the bracket of a one-pass mask (two ranks among a sample of a tensor's keys).
//! - [`onepass`]: the exact mask of a tensor's `k` smallest `|g|` in one read-write pass
//!   (sampled bracket, one pass that masks below it and compacts the entries inside it, the
//!   digit steps among those, a fix-up scatter), into a new tensor so that a missed bracket
//!   falls back to the intact input.
//! - [`mask`]: the fused mask, in place, the threshold read from device memory.
//! - [`list`]: the histogram pass and the mask over every gradient of a step in one launch.
//! - [`hold`]: the fused select of `MaskTarget::Update`, in place, same threshold.
//! - [`count`]: masked and non-finite counts against a threshold (global-scope statistics).
//! - [`random`]: the random-mask baseline and its counts, with the host's counter-based draws
//!   (SplitMix64 in 32-bit halves), so a random mask is identical on every backend.
//!
//! [`key`] is the order-preserving key every kernel compares: integers from the value's bits
//! (16-bit floats widened exactly to `f32`), never float comparisons, so a device that flushes
//! subnormals still agrees with the host bit for bit. The dtype reaches a kernel as a
//! comptime [`key::KeyKind`], and each dtype compiles to its own kernel. No kernel uses plane
//! (warp) operations, so all of them run on lavapipe and on any CubeCL runtime.
//!
//! # Launching
//!
//! The kernels that run over a gradient's entries (mask, select, counts, random mask and
//! counts, histogram) are kernel families ([`launch::PlannedKernel`]) launched by one function,
//! [`launch::LaunchPlan::launch`], which holds the launch loop and its `unsafe` block. A
//! [`launch::LaunchPlan`] is made per operation from the tensors' dtype and length:
//! - the vector width is the widest of the device's I/O-optimised widths for the dtype that is
//!   at most the length;
//! - the entries are split into the whole vectors, one launch at that width, and the `n % v`
//!   tail, one scalar launch if there is one;
//! - an elementwise kernel (mask, select, random mask) gets one unit per position, with
//!   CubeCL's default cube size for the device and as many cubes as that takes;
//! - a reduction (histogram, counts) gets cubes of 256 units (fewer on a device that has fewer)
//!   in a grid-stride loop, one cube per 16 vectors a unit, at most 1,024 cubes: each cube
//!   pays a fixed cost to clear and merge its shared counters.
//!
//! The selection steps of [`radix`] and [`small`] are single launches over a selection buffer,
//! each with its own grid: the digit step one cube of 256 units per selection, the threshold
//! write one unit per selection, the small selection one cube. The one-pass mask's pass is a
//! planned family (elementwise); its start and resolve are launches of their own.
//!
//! Every launch site counts its launch (`launch::count_launch`), which tests read through
//! `burn_gmt_kernels::testing::kernel_launches` (Burn's own copies and fills are not
//! counted).
//!
//! # A mask on the device
//!
//! Launches and memory passes of a per-tensor GMT step on one f32 gradient of `n` entries
//! (vector width `v`; each data-parallel kernel is one launch over the `n / v` whole vectors
//! plus one scalar launch over the `n % v` tail, if any):
//!
//! | step | launches | passes over the gradient |
//! |---|---:|---|
//! | start the selection buffer | 1 | – |
//! | histogram of the high 16 bits, digit step | 1 (+1 tail) + 1 | 1 read |
//! | histogram of the low 16 bits, digit step | 1 (+1 tail) + 1 | 1 read |
//! | threshold write | 1 | – |
//! | mask, in place | 1 (+1 tail) | 1 read + 1 write |
//! | **total** | **7 (+3 tails)** | **3 reads + 1 write** |
//!
//! f16 and bf16 need one histogram pass (5 launches, 2 reads + 1 write). A tensor of at most
//! 4,096 entries is selected by [`small`] in one launch: 3 launches in all. That is what the
//! optimizer wrapper, which sees one tensor at a time, launches per tensor. `GradMask::apply`
//! sees the whole step and batches it (below).
//!
//! ## The one-pass mask
//!
//! [`MaskOps::abs_key_mask_rank`] selects and masks a tensor of more than 4,096 entries
//! ([`onepass`]; at most 4,096: the three launches above) in one read and one write of the
//! gradient, plus a few percent of it: the sample bracket (one cube, 4,096 keys at most), the
//! pass, and the selection among the bracket's entries only. f32:
//!
//! | step | launches | passes over the gradient |
//! |---|---:|---|
//! | zero the bracket buffer (Burn's fill) | (1) | – |
//! | bracket from a sample | 1 | – |
//! | pass: mask below the bracket into a new tensor, compact the bracket's entries | 1 (+1 tail) | 1 read + 1 write |
//! | start (hit or miss, from the pass's counts) | 1 | – |
//! | per 16-bit digit: histogram of the buffer, of the input (guarded: one ends at once), digit step | 2 × 3 (+tails) | (on a miss: 1 read each) |
//! | resolve: scatter zeros over the buffer (on a miss: the mask from the input) | 1 | (on a miss: 1 read + 1 write) |
//! | **total** | **10 (+tails)** | **1 read + 1 write** (a miss: 3 reads + 2 writes) |
//!
//! The buffer holds the bracket's expected share and a quarter more (about 7 % of the
//! entries near the median rank with a sample of 4,096 keys), read three times in all (two
//! histograms, the scatter) and written twice (fill, compaction). f16/bf16: one digit, 7
//! launches. The launches do not depend on the size or the route (`tests/gpu_launches.rs`).
//!
//! ## A step's launches do not grow with its tensors
//!
//! `GradMask`'s step selects every masked gradient of a device and dtype together and masks
//! them together: [`list`] holds the batched histogram pass and the batched mask, each one
//! launch over all the gradients ([`MaskOps::radix_select_count_each`],
//! [`MaskOps::abs_threshold_mask_each`]). Each gradient is a buffer binding of its own (no
//! concatenated copy): Burn 0.22's `#[backend_extension]` takes a fixed number of tensors per
//! operation, so the list travels as a [`GradList`], whose Dispatch and Fusion adapters
//! `crate::list` writes by hand. A gradient whose length is not a multiple of the vector
//! width has its tail in one scalar launch with the step's other tails; the small tensors
//! that one launch would select alone join the batch. An f32 step of any number of tensors:
//!
//! | step | launches |
//! |---|---:|
//! | start the selection buffer | 1 |
//! | per 16-bit digit: histogram of every gradient, digit step | 2 × (1 (+1 tails) + 1) |
//! | threshold write | 1 |
//! | mask every gradient, in place | 1 (+1 tails) |
//! | **total** | **7 (+3 tails)** |
//!
//! (f16/bf16: one digit, 5 (+2).) A launch binds at most
//! [`LIST_MAX_TENSORS`](crate::buffer::LIST_MAX_TENSORS) gradients (fewer where the device
//! binds fewer buffers: 28 on wgpu over lavapipe, about as many on Metal), and a selection
//! buffer holds 256 segments, so a step of more tensors launches one more histogram and mask
//! launch per 32 tensors (SmolLM2-135M's 272 tensors: 9 per pass, where they were 272).
//! `tests/gpu_launches.rs` here and `tests/grad_mask_launches.rs` in burn-gmt check that a
//! step of 4 tensors and one of as many as a launch binds launch the same kernels, and a
//! larger one three more per launch's worth. What still launches per tensor: a tensor of
//! 2^24 entries or more takes the one-pass mask (its own 10 launches, negligible beside its
//! size), `MaskTarget::Update`'s select pass, statistics of a global threshold, and the
//! random-mask and HFT baselines.
//!
//! Nothing is read back to the host; statistics, when collected, are the selection buffer's
//! state words (one read-back per step for all tensors). With `MaskScope::Global` the start,
//! digit and threshold launches happen once per step and each tensor adds its histogram
//! passes to the same buffer (no concatenation), then a counting pass per tensor if statistics
//! are on. `MaskTarget::Update` adds one select launch (reads the masked gradient, the update
//! and the previous values, writes the update). A non-contiguous input costs one copy first,
//! and a gradient still held elsewhere one copy before it is written.
//!
//! Where the time of such a mask goes is what `GMT_BENCH_BREAKDOWN=1 cargo bench --bench mask`
//! prints; the figures measured so far are in `docs/performance.md`.
//!
//! # CUDA code generation without a GPU
//!
//! `tools/cuda-codegen` (a workspace of its own, which CI runs) compiles every kernel family
//! to CUDA on a machine without a GPU: it includes these files with the `gmt_cuda_codegen`
//! cfg, which leaves out their Burn-facing launch functions (`#[cfg(not(gmt_cuda_codegen))]`),
//! builds each kernel with the `create_dummy_kernel` function CubeCL generates for
//! `#[cube(launch_unchecked, create_dummy_kernel)]` (device properties made by hand as
//! cubecl-cuda 0.11.3 reads them from a device, buffer handles that are never launched), takes
//! its `KernelDefinition` (`CubeKernel::define`), turns it into CUDA C++ with cubecl-cpp's
//! `CppCompiler<Cuda>` (what cubecl-cuda's `cpp` feature hands to NVRTC) and compiles that with
//! NVRTC (NVIDIA's `nvidia-cuda-nvrtc-cu12` wheel, opened by `cudarc` at run time; the f16 and
//! bf16 headers from `nvidia-cuda-runtime-cu12`) for sm_80 and sm_90a: every planned family
//! at the scalar and the 128-bit vector width with 32- and 64-bit addresses, and every kernel
//! launched on its own, for f32, f16 and bf16 (272 kernels). It is a workspace of its own
//! because cubecl-cpp turns on cubecl-ir's `amd` feature: in this workspace that would change
//! cubecl-ir under all of Burn's CubeCL crates and rebuild them; there only CubeCL's compiler
//! crates build (about 2.5 CPU-minutes cold). What it does not check is what NVRTC cannot: the
//! kernels' results on a GPU (`scripts/gpu-check.sh`).
//!
//! # The host reference
//!
//! Every kernel computes exactly what the host code of the crate computes ([`crate::host`]:
//! the keys, the digit histogram, the digit step, the threshold counts; [`crate::random`]: the
//! draws), which the CPU backends and [`MaskOps`]'s default bodies run. The GPU tests
//! (`tests/gpu_kernels.rs`) compare each kernel with it bit for bit. The host also takes the
//! cases the kernels do not: selections over 2^32 entries or more in all (the device counts in
//! `u32`) use the passes driven from the host, the histogram kernel with a host prefix and one
//! 256 KiB histogram read back per tensor and pass; `f64` (no 32-bit key) uses the default
//! bodies, which read the tensor back.

mod count;
mod histogram;
mod hold;
mod key;
mod launch;
mod list;
mod mask;
mod onepass;
mod radix;
mod random;
mod small;

use burn::backend::TensorMetadata;
use burn::backend::ops::IntTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;

use crate::buffer::{
    HISTOGRAM_LEN, SELECTION_LEN, SELECTION_STATE_LEN, SMALL_SELECT_MAX_ENTRIES, selection_segments,
};
use crate::element::inf_key;
use crate::host_ops::{self, ViaData};
use crate::list::GradList;
use crate::ops::MaskOps;
use histogram::Prefix;
use launch::LaunchPlan;
#[cfg(any(test, feature = "testing"))]
pub(crate) use launch::launches;
use list::ListPlan;
#[cfg(any(test, feature = "testing"))]
pub(crate) use list::list_limit;

/// The plan of an on-device selection step, which has kernels for every dtype it accepts.
fn selection_plan(tensors: &[&CubeTensor], len: usize) -> LaunchPlan {
    LaunchPlan::new(tensors, len).unwrap_or_else(|| {
        panic!(
            "gradient mask: on-device selection takes f32, f16 or bf16, not {:?}",
            tensors[0].dtype
        )
    })
}

/// Two zeroed `U32` counters on `like`'s device, for a counting kernel to add to.
fn zero_counts(like: &CubeTensor) -> CubeTensor {
    zeros_client(
        like.client.clone(),
        like.device.clone(),
        Shape::new([2]),
        DType::U32,
    )
}

/// Counters made on the host (the fallbacks), as the `U32` tensor the kernels return.
fn host_counters(words: &[u64], like: &CubeTensor) -> CubeTensor {
    let words: Vec<u32> = words
        .iter()
        .map(|&w| u32::try_from(w).expect("gradient mask: a count over u32 on a CubeCL device"))
        .collect();
    let len = words.len();
    CubeBackend::int_from_data(TensorData::new(words, [len]), &like.device)
}

/// A contiguous tensor this call may write to: the input itself when nothing else holds it,
/// a copy otherwise.
fn writable(tensor: CubeTensor) -> CubeTensor {
    let tensor = into_contiguous(tensor);
    if tensor.can_mut() {
        tensor
    } else {
        tensor.copy()
    }
}

impl MaskOps for CubeBackend {
    fn abs_key_histogram(grad: &FloatTensor<Self>, shift: u32, prefix: u64) -> IntTensor<Self> {
        let len = grad.shape().num_elements();
        let hist = zeros_client(
            grad.client.clone(),
            grad.device.clone(),
            Shape::new([HISTOGRAM_LEN]),
            DType::U32,
        );
        let grad = into_contiguous(grad.clone());
        match LaunchPlan::new(&[&grad], len) {
            // The kernel's keys are 32-bit; a shift past them is the host's business.
            Some(plan) if len > 0 && shift < 32 => {
                assert!(
                    len < u32::MAX as usize,
                    "gradient mask: a CubeCL histogram counts fewer than 2^32 entries per tensor"
                );
                histogram::launch(&grad, &hist, &plan, shift, Prefix::Value(prefix), None);
                hist
            }
            Some(_) if len == 0 => hist,
            _ => {
                // f64 and odd passes: counted on the host, returned in the kernel's dtype.
                let hist = host_ops::histogram_counts::<Self, ViaData>(&grad, shift, prefix);
                host_counters(&hist, &grad)
            }
        }
    }

    fn abs_threshold_mask(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        assert_eq!(
            grad.dtype, threshold.dtype,
            "gradient mask: threshold dtype"
        );
        let len = grad.shape().num_elements();
        if len == 0 {
            return grad;
        }
        let values = writable(grad);
        let threshold = into_contiguous(threshold);
        match LaunchPlan::new(&[&values, &threshold], len) {
            Some(plan) => {
                mask::launch(&values, &threshold, &plan);
                values
            }
            None => host_ops::abs_threshold_mask::<Self, ViaData>(values, threshold),
        }
    }

    fn abs_threshold_select(
        grad: FloatTensor<Self>,
        threshold: FloatTensor<Self>,
        updated: FloatTensor<Self>,
        previous: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let len = updated.shape().num_elements();
        assert!(
            grad.shape().num_elements() == len && previous.shape().num_elements() == len,
            "gradient mask: gradient, updated and previous values must have one shape"
        );
        assert!(
            grad.dtype == updated.dtype
                && previous.dtype == updated.dtype
                && threshold.dtype == updated.dtype,
            "gradient mask: dtypes"
        );
        if len == 0 {
            return updated;
        }
        let grad = into_contiguous(grad);
        let threshold = into_contiguous(threshold);
        let previous = into_contiguous(previous);
        let out = writable(updated);
        match LaunchPlan::new(&[&out, &grad, &previous, &threshold], len) {
            Some(plan) => {
                hold::launch(&grad, &threshold, &out, &previous, &plan);
                out
            }
            None => host_ops::abs_threshold_select::<Self, ViaData>(grad, threshold, out, previous),
        }
    }

    fn radix_select_start(like: &FloatTensor<Self>, ranks: Vec<u64>) -> IntTensor<Self> {
        crate::ops::check_segments(ranks.len());
        let ranks: Vec<u32> = ranks
            .into_iter()
            .map(|rank| {
                u32::try_from(rank)
                    .expect("gradient mask: an on-device selection ranks fewer than 2^32 entries")
            })
            .collect();
        let selection = empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([ranks.len() * SELECTION_LEN]),
            DType::U32,
        );
        radix::launch_start(&selection, &ranks);
        selection
    }

    fn abs_key_select(grad: &FloatTensor<Self>, rank: u64) -> IntTensor<Self> {
        let len = grad.shape().num_elements();
        let grad = into_contiguous(grad.clone());
        let plan = selection_plan(&[&grad], len);
        assert!(
            len <= SMALL_SELECT_MAX_ENTRIES && rank < len as u64,
            "gradient mask: a one-step selection takes at most {SMALL_SELECT_MAX_ENTRIES} entries and a rank below them"
        );
        let state = empty_device_dtype(
            grad.client.clone(),
            grad.device.clone(),
            Shape::new([SELECTION_STATE_LEN]),
            DType::U32,
        );
        let inf = inf_key(grad.dtype).expect("a supported float dtype") as u32;
        small::launch(&grad, &state, &plan, rank as u32, inf);
        state
    }

    fn radix_select_count(
        grad: &FloatTensor<Self>,
        selection: IntTensor<Self>,
        shift: u32,
        segment: u32,
    ) -> IntTensor<Self> {
        let len = grad.shape().num_elements();
        let selection = writable(selection);
        let grad = into_contiguous(grad.clone());
        let plan = selection_plan(&[&grad], len);
        if len > 0 {
            let prefix = Prefix::InBuffer(segment as usize);
            histogram::launch(&grad, &selection, &plan, shift, prefix, None);
        }
        selection
    }

    fn radix_select_count_each(
        grads: GradList<Self>,
        selection: IntTensor<Self>,
        shift: u32,
        segments: Vec<u32>,
    ) -> IntTensor<Self> {
        crate::ops::check_list(grads.tensors.len(), segments.len(), "segment");
        let selection = writable(selection);
        let grads: Vec<CubeTensor> = grads.tensors.into_iter().map(into_contiguous).collect();
        if grads.is_empty() {
            return selection;
        }
        let plan = ListPlan::new(&grads, &segments).unwrap_or_else(|| {
            panic!(
                "gradient mask: on-device selection takes f32, f16 or bf16, not {:?}",
                grads[0].dtype
            )
        });
        list::launch_histogram_each(&grads, &selection, &plan, shift);
        selection
    }

    fn abs_threshold_mask_each(
        grads: GradList<Self>,
        thresholds: FloatTensor<Self>,
        slots: Vec<u32>,
    ) -> GradList<Self> {
        crate::ops::check_list(grads.tensors.len(), slots.len(), "threshold slot");
        assert!(
            grads.tensors.iter().all(|g| g.dtype == thresholds.dtype),
            "gradient mask: threshold dtype"
        );
        let grads: Vec<CubeTensor> = grads.tensors.into_iter().map(writable).collect();
        let thresholds = into_contiguous(thresholds);
        match ListPlan::new(&grads, &slots) {
            Some(plan) => {
                list::launch_mask_each(&grads, &thresholds, &plan);
                GradList::new(grads)
            }
            // No gradient, or f64: one mask each (the host's, for f64).
            None => crate::ops::mask_each_alone::<Self>(grads, thresholds, slots),
        }
    }

    fn radix_select_digit(selection: IntTensor<Self>, inf_digit: u32) -> IntTensor<Self> {
        let selection = writable(selection);
        radix::launch_digit(&selection, inf_digit);
        selection
    }

    fn radix_select_threshold(
        like: &FloatTensor<Self>,
        selection: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let plan = selection_plan(&[like], 1);
        let segments = selection_segments(selection.shape().num_elements());
        let threshold = empty_device_dtype(
            like.client.clone(),
            like.device.clone(),
            Shape::new([segments]),
            like.dtype,
        );
        let inf = inf_key(like.dtype).expect("a supported float dtype") as u32;
        radix::launch_threshold(
            &into_contiguous(selection),
            &threshold,
            inf,
            plan.kind,
            plan.storage,
        );
        threshold
    }

    fn abs_key_mask_rank(
        grad: FloatTensor<Self>,
        rank: u64,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let len = grad.shape().num_elements();
        assert!(
            rank < len as u64,
            "gradient mask: rank {rank} of {len} entries"
        );
        let grad = into_contiguous(grad);
        let plan = selection_plan(&[&grad], len);
        if len <= SMALL_SELECT_MAX_ENTRIES {
            // One launch selects it: the two passes are three launches, the one pass more.
            let state = Self::abs_key_select(&grad, rank);
            let threshold = Self::radix_select_threshold(&grad, state.clone());
            return (Self::abs_threshold_mask(grad, threshold), state);
        }
        let inf = inf_key(grad.dtype).expect("a supported float dtype") as u32;
        let miss = crate::select::route::forced_miss();
        onepass::mask_rank(&grad, &plan, rank as u32, inf, miss)
    }

    fn abs_threshold_count(
        grad: &FloatTensor<Self>,
        threshold: &FloatTensor<Self>,
    ) -> IntTensor<Self> {
        let len = grad.shape().num_elements();
        let counts = zero_counts(grad);
        let grad = into_contiguous(grad.clone());
        let threshold = into_contiguous(threshold.clone());
        match LaunchPlan::new(&[&grad, &threshold], len) {
            Some(_) if len == 0 => counts,
            Some(plan) => {
                count::launch(&grad, &threshold, &counts, &plan);
                counts
            }
            None => {
                // f64: counted on the host, returned in the kernel's dtype.
                let c = host_ops::threshold_counts::<Self, ViaData>(&grad, &threshold);
                host_counters(&[c.masked, c.non_finite], &grad)
            }
        }
    }

    fn random_mask(grad: FloatTensor<Self>, key: u64, bound: u64, scale: f64) -> FloatTensor<Self> {
        let len = grad.shape().num_elements();
        if len == 0 {
            return grad;
        }
        let values = writable(grad);
        match LaunchPlan::new(&[&values], len) {
            // Draws index entries with 32 bits on the device.
            Some(plan) if len <= u32::MAX as usize => {
                random::launch_mask(&values, &plan, key, bound, scale);
                values
            }
            _ => host_ops::random_mask::<Self, ViaData>(values, key, bound, scale),
        }
    }

    fn random_mask_count(grad: &FloatTensor<Self>, key: u64, bound: u64) -> IntTensor<Self> {
        let len = grad.shape().num_elements();
        let counts = zero_counts(grad);
        let grad = into_contiguous(grad.clone());
        match LaunchPlan::new(&[&grad], len) {
            Some(_) if len == 0 => counts,
            Some(plan) if len < u32::MAX as usize => {
                random::launch_count(&grad, &counts, &plan, key, bound);
                counts
            }
            _ => {
                // f64 or 2^32 entries and more: counted on the host.
                let c = host_ops::random_mask_counts::<Self, ViaData>(&grad, key, bound);
                host_counters(&[c.masked, c.non_finite], &grad)
            }
        }
    }
}

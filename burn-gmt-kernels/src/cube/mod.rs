//! `MaskOps` on the CubeCL backend (wgpu, Vulkan, Metal, WebGPU, CUDA, ROCm), and through the
//! macro-generated `Fusion` implementation on `Fusion<CubeBackend>`, which is what a wgpu or
//! CUDA device is by default.
//!
//! Kernels (one file each, the `#[cube]` functions next to their launchers):
//! - [`histogram`]: one radix pass of the exact selection: shared-memory atomics per cube
//!   (a window of 2,048 bins, 512 after the first pass, around the cube's sampled median
//!   digit, plus digit 0), merged into a global `u32` histogram; the pass's key prefix comes
//!   from the host or from the selection buffer in device memory.
//! - [`radix`]: starting a selection buffer, the digit step (one cube scans the 65,536 bins,
//!   appends the digit, records the counts and clears the bins) and the threshold write.
//! - [`small`]: the whole selection of a tensor of at most 4,096 entries in one launch (keys
//!   in one cube's shared memory, 8-bit digits), for the small tensors whose cost is launches.
//! - [`mask`]: the fused mask, in place, the threshold read from device memory.
//! - [`select`]: the fused select of `MaskTarget::Update`, in place, same threshold.
//! - [`count`]: masked and non-finite counts against a threshold (global-scope statistics).
//! - [`random`]: the random-mask baseline and its counts, with the host's counter-based draws
//!   (SplitMix64 in 32-bit halves), so a random mask is identical on every backend.
//!
//! No kernel uses plane (warp) operations, so all of them run on lavapipe and on any CubeCL
//! runtime. Keys are compared as integers (the sign-cleared bits, 16-bit floats widened
//! exactly to `f32`), so a device that flushes subnormals in arithmetic still agrees with the
//! host bit for bit.
//!
//! Launches and memory passes of a per-tensor GMT step on one f32 gradient of `n` entries
//! (vector width `v` chosen per device and dtype; each data-parallel kernel is one launch
//! over the `n / v` whole vectors plus one scalar launch over the `n % v` tail, if any):
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
//! sees the whole step: the per-tensor selections of its tensors over 4,096 entries share one
//! selection buffer (a segment each, up to 256 per buffer), so the start, each digit step and
//! the threshold write are one launch for all of them, and a step of `T` such f32 tensors
//! launches `3T + 4` kernels (`2T + 3` for f16/bf16) instead of `7T`: the launches that remain
//! per tensor are its passes over the gradient. Those take the gradient as a kernel argument,
//! and Burn 0.22's backend extensions take a fixed number of tensors per operation (no list of
//! tensors reaches a Fusion custom operation), so one launch over all the gradients of a step
//! would need a concatenated copy of them. Nothing is read back
//! to the host; statistics, when collected, are the selection buffer's state words (one
//! read-back per step for all tensors). With `MaskScope::Global` the start, digit and
//! threshold launches happen once per step and each tensor adds its histogram passes to the
//! same buffer (no concatenation), then a counting pass per tensor if statistics are on.
//! `MaskTarget::Update` adds one select launch (reads the masked gradient, the update and the
//! previous values, writes the update). A non-contiguous input costs one copy first, and a
//! gradient still held elsewhere one copy before it is written.
//!
//! Where the time of one such mask goes is what `GMT_BENCH_BREAKDOWN=1 cargo bench --bench mask`
//! prints: each step above timed on its own between two synchronisations, beside a
//! synchronisation alone, one plain Burn elementwise operation and a copy. On lavapipe (Mesa's
//! Vulkan on the CPU, 2 cores, 2026-11-30) at 65,536 f32 entries, in ms: sync 0.17, plain op
//! 0.42, copy 0.40; start 0.55, histogram 1.04 then 0.60, digit step 0.58 and 0.60, threshold
//! 0.31, mask 0.42; the whole selection 2.63 and the whole mask 2.90. Every step costs about
//! what any synchronised operation costs there, whatever it does: at this size a mask's time is
//! its number of operations, not its memory passes (at 1M entries the histogram passes take over,
//! 13.0 and 5.1 ms of 22.0). The same table on a real GPU tells how much of the 0.45 ms per
//! tensor measured on an H200 is launches and Burn's fusion bookkeeping; it is not measured yet
//! (no GPU was lent since): `scripts/gpu-check.sh --bundle` runs it.
//!
//! The H200's first table already suggests an answer. A tensor of at most 4,096 entries (3
//! launches) cost 0.16 ms and one of 65,536 to 16M entries (7 launches) 0.47–0.49 ms, so the
//! 4 extra launches cost about 78 µs each whatever the size. That is an order of magnitude
//! above a bare CUDA launch, and flat in the size: a per-operation cost on the host (Fusion's
//! handling of an opaque operation, CubeCL's launch path), not work on the device. If the
//! breakdown confirms it, the next cuts for a lone tensor (the optimizer wrapper's case) are:
//! - write the threshold in the last digit step (7 → 6 launches, 5 → 4 for f16/bf16; it needs
//!   an extension operation with two outputs, the buffer and the threshold);
//! - have the mask read the key from the selection buffer rather than from a threshold tensor.
//!
//! Selections over 2^32 entries or more in all (the device counts in `u32`) use the passes
//! driven from the host: the histogram kernel with a host prefix, one 256 KiB histogram read
//! back per tensor and pass. `f64` (no 32-bit key) uses the host fallback of [`MaskOps`]'s
//! default bodies, which read the tensor back.

mod count;
mod histogram;
mod hold;
mod key;
mod mask;
mod radix;
mod random;
mod small;

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::IntTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::{empty_device_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::client::Client;
use cubecl::prelude::{AddressType, CubeCount, CubeDim, ElemType};

use crate::buffer::{
    HISTOGRAM_LEN, SELECTION_LEN, SELECTION_STATE_LEN, SMALL_SELECT_MAX_ENTRIES, selection_segments,
};
use crate::element::inf_key;
use crate::host_ops::{self, ViaData};
use crate::ops::MaskOps;
use histogram::Prefix;

/// How one operation covers a contiguous run of `len` entries of one dtype.
pub(crate) struct LaunchPlan {
    client: Client,
    len: usize,
    /// Entries per vector of the main launch.
    vector_size: usize,
    /// Key kind of the dtype ([`key::KIND_F32`] and friends).
    kind: u32,
    storage: ElemType,
    address_type: AddressType,
}

/// One launch of a plan: positions `start..end` counted in vectors of `vector_size`.
pub(crate) struct Launch {
    vector_size: usize,
    start: usize,
    end: usize,
    cube_count: CubeCount,
    cube_dim: CubeDim,
}

impl LaunchPlan {
    /// The plan for `len` entries of `tensors` (contiguous, one dtype), or `None` when the
    /// dtype has no kernel (the caller falls back to the host).
    fn new(tensors: &[&CubeTensor], len: usize) -> Option<Self> {
        let first = tensors[0];
        let kind = match first.dtype {
            DType::F32 => key::KIND_F32,
            DType::F16 => key::KIND_F16,
            DType::BF16 => key::KIND_BF16,
            _ => return None,
        };
        let vector_size = first
            .client
            .io_optimized_vector_sizes(first.dtype.size())
            .find(|&v| v <= len)
            .unwrap_or(1);
        let address_type = tensors
            .iter()
            .map(|t| t.required_address_type())
            .max()
            .unwrap_or_default();
        Some(Self {
            client: first.client.clone(),
            len,
            vector_size,
            kind,
            storage: dtype_to_storage_type(first.dtype),
            address_type,
        })
    }

    /// The vectorized launch over the whole vectors, then the scalar launch over the tail,
    /// one unit per position.
    fn launches(&self) -> Vec<Launch> {
        self.split(|units| {
            let cube_dim = CubeDim::new(&self.client, units);
            let cube_count = calculate_cube_count_elemwise(&self.client, units, cube_dim);
            (cube_count, cube_dim)
        })
    }

    /// The same two launches, as grid-stride reductions ([`reduction_grid`]).
    fn reduction_launches(&self) -> Vec<Launch> {
        self.split(|vectors| reduction_grid(&self.client, vectors))
    }

    /// A launch over the whole vectors and one over the scalar tail, if any, each with the
    /// grid `grid` gives for its number of positions.
    fn split(&self, grid: impl Fn(usize) -> (CubeCount, CubeDim)) -> Vec<Launch> {
        let vectors = self.len / self.vector_size;
        let tail = self.len % self.vector_size;
        let launch = |vector_size, start, end| {
            let (cube_count, cube_dim) = grid(end - start);
            Launch {
                vector_size,
                start,
                end,
                cube_count,
                cube_dim,
            }
        };
        let mut launches = Vec::with_capacity(2);
        if vectors > 0 {
            launches.push(launch(self.vector_size, 0, vectors));
        }
        if tail > 0 {
            launches.push(launch(1, self.len - tail, self.len));
        }
        launches
    }
}

/// Units per cube of the grid-stride reductions (histogram, counts).
const REDUCTION_UNITS: u32 = 256;
/// Vectors per unit below which a reduction launches fewer cubes (each cube pays a fixed
/// cost: clearing and merging its shared counters).
const VECTORS_PER_UNIT: usize = 16;
/// At most this many cubes per reduction; the grid-stride loop covers the rest.
const MAX_REDUCTION_CUBES: usize = 1024;

/// Cubes and units of a grid-stride reduction over `vectors` vectors.
fn reduction_grid(client: &Client, vectors: usize) -> (CubeCount, CubeDim) {
    let units = REDUCTION_UNITS
        .min(client.properties().hardware.max_units_per_cube)
        .max(1);
    let cubes = vectors
        .div_ceil(units as usize * VECTORS_PER_UNIT)
        .clamp(1, MAX_REDUCTION_CUBES);
    (CubeCount::new_1d(cubes as u32), CubeDim::new_1d(units))
}

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
                histogram::launch(&grad, &hist, &plan, shift, Prefix::Value(prefix));
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
            histogram::launch(&grad, &selection, &plan, shift, prefix);
        }
        selection
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

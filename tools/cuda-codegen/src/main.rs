//! Compiles every kernel family of burn-gmt-kernels to CUDA without a GPU: each kernel is
//! expanded by CubeCL (`create_dummy_kernel`, then `define`), turned into CUDA C++ by
//! cubecl-cpp's `CppCompiler<Cuda>` (what cubecl-cuda's `cpp` feature hands to NVRTC), and
//! compiled by NVRTC for sm_80 and sm_90a, for f32, f16 and bf16 and each vector width the
//! kernels launch with.
//!
//! Run: `cargo run --manifest-path tools/cuda-codegen/Cargo.toml` with `libnvrtc.so.12` on
//! `LD_LIBRARY_PATH` and `GMT_CUDA_INCLUDE` naming a directory with `cuda_fp16.h` and
//! `cuda_bf16.h` (the `nvidia-cuda-nvrtc-cu12` and `nvidia-cuda-runtime-cu12` wheels; `.ci/run`
//! installs both). Without NVRTC it still generates every kernel's C++ and says NVRTC was
//! skipped, unless `GMT_REQUIRE_NVRTC=1`, which makes that a failure. Exits 1 on any failure.
#![allow(dead_code, unused_imports)] // the kernel files bring what only their launchers use

#[path = "../../../burn-gmt-kernels/src/buffer.rs"]
mod buffer;
mod cube;
mod device;

use std::ffi::CString;

use cubecl::Compiler;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use cubecl_cpp::shared::{CompilationOptions, CppCompiler};
use cubecl_cpp::target::Cuda;
use cubecl_runtime::kernel::{CubeKernel, KernelDefinition};

use buffer::{LIST_MAX_TENSORS, SELECTION_LEN, SELECTION_STATE_LEN, WORK_LEN};
use cube::count::{CountArgsLaunch, ThresholdCount};
use cube::histogram::{Histogram, HistogramArgsLaunch};
use cube::hold::{Hold, HoldArgsLaunch};
use cube::key::KeyKind;
use cube::launch::{PlannedKernel, plan_kernel};
use cube::mask::{Mask, MaskArgsLaunch};
use cube::onepass::{BracketPass, BracketPassArgsLaunch};
use cube::radix;
use cube::random::{
    DrawLaunch, RandomCount, RandomCountArgsLaunch, RandomMask, RandomMaskArgsLaunch,
};
use cube::small::{self, SmallSelect};
use device::{Arch, buffer};

/// A dtype the kernels take: how they key it and how CubeCL stores it.
#[derive(Clone, Copy, Debug)]
struct Dtype {
    kind: KeyKind,
    storage: ElemType,
    bits: usize,
}

const DTYPES: [Dtype; 3] = [
    Dtype {
        kind: KeyKind::F32,
        storage: ElemType::Float(FloatKind::F32),
        bits: 32,
    },
    Dtype {
        kind: KeyKind::F16,
        storage: ElemType::Float(FloatKind::F16),
        bits: 16,
    },
    Dtype {
        kind: KeyKind::Bf16,
        storage: ElemType::Float(FloatKind::BF16),
        bits: 16,
    },
];

/// One kernel to compile: its name and its definition on `arch`.
struct Case {
    name: String,
    define: Box<dyn Fn(&Arch) -> KernelDefinition>,
}

/// The planned families (`LaunchPlan::launch`): each at the scalar width of a tail and at the
/// width of a 128-bit load, with 32- and 64-bit addresses.
fn planned_cases(dtype: Dtype) -> Vec<Case> {
    let mut cases = Vec::new();
    for vector_size in [1, 128 / dtype.bits] {
        for address in [AddressType::U32, AddressType::U64] {
            let tag = format!("{:?} x{vector_size} {address:?}", dtype.kind);
            let plan = move |arch: &Arch| (arch.clone(), vector_size, address, dtype);
            macro_rules! planned {
                ($name:literal, $family:ty, $args:expr) => {
                    cases.push(Case {
                        name: format!("{} {tag}", $name),
                        define: Box::new(move |arch: &Arch| {
                            let (arch, vector_size, address, dtype) = plan(arch);
                            define_planned::<$family>(&arch, vector_size, address, dtype, $args)
                        }),
                    });
                };
            }
            planned!("mask", Mask, || MaskArgsLaunch::new(
                buffer(1024),
                buffer(1)
            ));
            planned!("hold", Hold, || HoldArgsLaunch::new(
                buffer(1024),
                buffer(1),
                buffer(1024),
                buffer(1024)
            ));
            planned!("threshold count", ThresholdCount, || CountArgsLaunch::new(
                buffer(1024),
                buffer(1),
                buffer(2)
            ));
            planned!("random mask", RandomMask, || RandomMaskArgsLaunch::new(
                buffer(1024),
                DrawLaunch::new(1, 2, 3, 4, false),
                0.5,
                true
            ));
            planned!("random count", RandomCount, || RandomCountArgsLaunch::new(
                buffer(1024),
                buffer(2),
                DrawLaunch::new(1, 2, 3, 4, false)
            ));
            for (first_pass, in_buffer) in [(true, false), (false, true)] {
                let window = if first_pass { 2048 } else { 512 };
                for guarded in [false, true] {
                    let name = format!(
                        "histogram (window {window}, prefix in buffer {in_buffer}, guarded {guarded})"
                    );
                    cases.push(Case {
                        name: format!("{name} {tag}"),
                        define: Box::new(move |arch: &Arch| {
                            let (arch, vector_size, address, dtype) = plan(arch);
                            define_planned::<Histogram>(&arch, vector_size, address, dtype, || {
                                HistogramArgsLaunch::new(
                                    buffer(1024),
                                    buffer(SELECTION_LEN + WORK_LEN),
                                    16,
                                    31,
                                    0,
                                    0,
                                    window,
                                    in_buffer,
                                    SELECTION_LEN + 5,
                                    0,
                                    guarded,
                                )
                            })
                        }),
                    });
                }
            }
            planned!("one-pass", BracketPass, || BracketPassArgsLaunch::new(
                buffer(1024),
                buffer(1024),
                buffer(64),
                buffer(64),
                buffer(SELECTION_LEN + WORK_LEN),
                SELECTION_LEN,
                64,
                0x7F80_0000
            ));
        }
    }
    cases
}

/// A planned family's kernel definition.
fn define_planned<K: PlannedKernel>(
    arch: &Arch,
    vector_size: usize,
    address: AddressType,
    dtype: Dtype,
    args: impl Fn() -> cube::launch::PlannedArgs<K>,
) -> KernelDefinition {
    let kernel = plan_kernel::create_dummy_kernel::<K>(
        arch.properties(),
        arch.target(),
        CubeCount::new_1d(4),
        CubeDim::new_1d(256),
        address,
        vector_size,
        args(),
        0,
        1024 / vector_size,
        dtype.kind,
        dtype.storage,
    );
    kernel.define()
}

/// The kernels launched on their own (selection steps, small select, one-pass steps).
fn single_cases(dtype: Dtype) -> Vec<Case> {
    let kind = dtype.kind;
    let storage = dtype.storage;
    let tag = format!("{kind:?}");
    let mut cases: Vec<Case> = vec![
        Case {
            name: format!("selection threshold {tag}"),
            define: Box::new(move |arch: &Arch| {
                radix::radix_select_threshold_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(1),
                    CubeDim::new_1d(256),
                    buffer(SELECTION_LEN),
                    buffer(1),
                    SELECTION_LEN,
                    0x7F80_0000,
                    kind,
                    storage,
                )
                .define()
            }),
        },
        Case {
            name: format!("one-pass resolve {tag}"),
            define: Box::new(move |arch: &Arch| {
                cube::onepass::one_pass_resolve_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(4),
                    CubeDim::new_1d(256),
                    buffer(1024),
                    buffer(1024),
                    buffer(64),
                    buffer(64),
                    buffer(SELECTION_LEN + WORK_LEN),
                    buffer(SELECTION_STATE_LEN),
                    0,
                    SELECTION_LEN,
                    1024,
                    64,
                    0x7F80_0000,
                    kind,
                    storage,
                )
                .define()
            }),
        },
    ];
    // The batched kernels of a step, over three gradients, at the scalar width of the tails
    // and the 128-bit width, with 32- and 64-bit addresses; and over as many gradients as one
    // launch binds (`LIST_MAX_TENSORS`: the kernel unrolled that many times, its parameters
    // that many pointers), at the 128-bit width.
    let mut lists: Vec<(usize, AddressType, usize)> = Vec::new();
    for vector_size in [1, 128 / dtype.bits] {
        for address in [AddressType::U32, AddressType::U64] {
            lists.push((vector_size, address, 3));
        }
    }
    lists.push((128 / dtype.bits, AddressType::U32, LIST_MAX_TENSORS));
    for (vector_size, address, bindings) in lists {
        {
            let list_tag = format!("{tag} x{vector_size} {address:?}, {bindings} gradients");
            for first_pass in [true, false] {
                let window = if first_pass { 2048 } else { 512 };
                cases.push(Case {
                    name: format!("batched histogram (window {window}) {list_tag}"),
                    define: Box::new(move |arch: &Arch| {
                        cube::list::histogram_each_kernel::create_dummy_kernel(
                            arch.properties(),
                            arch.target(),
                            CubeCount::new_1d(4),
                            CubeDim::new_1d(256),
                            address,
                            vector_size,
                            (0..bindings).map(|_| buffer(1024)).collect(),
                            buffer((bindings + 1) * cube::list::PIECE_WORDS),
                            buffer(bindings * SELECTION_LEN),
                            16,
                            31,
                            window,
                            kind,
                            storage,
                        )
                        .define()
                    }),
                });
            }
            cases.push(Case {
                name: format!("batched mask {list_tag}"),
                define: Box::new(move |arch: &Arch| {
                    cube::list::mask_each_kernel::create_dummy_kernel(
                        arch.properties(),
                        arch.target(),
                        CubeCount::new_1d(4),
                        CubeDim::new_1d(256),
                        address,
                        vector_size,
                        (0..bindings).map(|_| buffer(1024)).collect(),
                        buffer((bindings + 1) * cube::list::PIECE_WORDS),
                        buffer(bindings),
                        kind,
                        storage,
                    )
                    .define()
                }),
            });
        }
    }
    for mode in [SmallSelect::State, SmallSelect::Bracket] {
        cases.push(Case {
            name: format!("small select ({mode:?}) {tag}"),
            define: Box::new(move |arch: &Arch| {
                small::radix_select_small_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(1),
                    CubeDim::new_1d(256),
                    buffer(4096),
                    buffer(SELECTION_LEN + WORK_LEN),
                    4096,
                    256,
                    7,
                    200,
                    0x7F80_0000,
                    SELECTION_LEN,
                    0,
                    mode,
                    kind,
                    kind.key_bits(),
                    storage,
                )
                .define()
            }),
        });
    }
    cases
}

/// The selection steps that read no gradient: one kernel each, whatever the dtype.
fn untyped_cases() -> Vec<Case> {
    vec![
        Case {
            name: "selection start".into(),
            define: Box::new(|arch: &Arch| {
                radix::radix_select_start_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(4),
                    CubeDim::new_1d(256),
                    buffer(2 * SELECTION_LEN),
                    buffer(2),
                )
                .define()
            }),
        },
        Case {
            name: "selection start (one rank)".into(),
            define: Box::new(|arch: &Arch| {
                radix::radix_select_start_one_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(4),
                    CubeDim::new_1d(256),
                    buffer(SELECTION_LEN),
                    5,
                )
                .define()
            }),
        },
        Case {
            name: "digit step".into(),
            define: Box::new(|arch: &Arch| {
                radix::radix_select_digit_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(1),
                    CubeDim::new_1d(256),
                    buffer(SELECTION_LEN),
                    0x7F80,
                    256,
                )
                .define()
            }),
        },
        Case {
            name: "one-pass start".into(),
            define: Box::new(|arch: &Arch| {
                cube::onepass::one_pass_start_kernel::create_dummy_kernel(
                    arch.properties(),
                    arch.target(),
                    CubeCount::new_1d(1),
                    CubeDim::new_1d(256),
                    buffer(SELECTION_LEN + WORK_LEN),
                    0,
                    SELECTION_LEN,
                    10,
                    64,
                )
                .define()
            }),
        },
    ]
}

fn main() {
    let nvrtc = device::Nvrtc::open();
    let mut cases = untyped_cases();
    for dtype in DTYPES {
        cases.extend(single_cases(dtype));
        cases.extend(planned_cases(dtype));
    }
    let (mut generated, mut compiled, mut failed) = (0, 0, Vec::new());
    for arch in Arch::ALL {
        for case in &cases {
            let name = format!("{} on {}", case.name, arch.name);
            let definition = (case.define)(&arch);
            let mut compiler = CppCompiler::<Cuda>::default();
            let source = match compiler.compile(definition, &arch.options()) {
                Ok(kernel) => kernel.to_string(),
                Err(err) => {
                    failed.push(format!("{name}: CUDA C++ generation failed: {err:?}"));
                    continue;
                }
            };
            generated += 1;
            if let Some(nvrtc) = &nvrtc {
                match nvrtc.compile(&source, &arch) {
                    Ok(()) => compiled += 1,
                    Err(log) => failed.push(format!(
                        "{name}: NVRTC failed:\n{log}\n--- source ---\n{source}"
                    )),
                }
            }
        }
    }
    for failure in &failed {
        eprintln!("FAILED: {failure}");
    }
    println!(
        "CUDA code generation: {generated} kernels generated, {compiled} compiled by NVRTC ({}), {} failed",
        if nvrtc.is_some() {
            "sm_80, sm_90a"
        } else {
            "skipped: no libnvrtc"
        },
        failed.len()
    );
    let nvrtc_missing = nvrtc.is_none() && std::env::var("GMT_REQUIRE_NVRTC").as_deref() == Ok("1");
    if nvrtc_missing {
        eprintln!(
            "FAILED: GMT_REQUIRE_NVRTC=1 and no libnvrtc (LD_LIBRARY_PATH) or GMT_CUDA_INCLUDE"
        );
    }
    if !failed.is_empty() || nvrtc_missing {
        std::process::exit(1);
    }
}

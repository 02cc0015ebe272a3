//! What a CUDA device would tell CubeCL, made by hand for the architectures checked, and NVRTC
//! opened at run time.

use std::ffi::CString;
use std::sync::Arc;

use cubecl::ir::{
    DeviceIdentity, DeviceProperties, HardwareProperties, MemoryDeviceProperties, TargetProperties,
};
use cubecl::prelude::*;
use cubecl_common::device::{DeviceId, ServiceId};
use cubecl_common::profile::TimingMethod;
use cubecl_cpp::shared::{CompilationOptions, CppSupportedFeatures};
use cubecl_environment::stream::StreamId;
use cubecl_runtime::server::Handle;

/// A CUDA architecture the kernels are compiled for.
#[derive(Clone, Debug)]
pub struct Arch {
    /// As NVRTC names it.
    pub name: &'static str,
    /// Its compute capability, times ten.
    pub version: u32,
}

impl Arch {
    /// Ampere (A100) and Hopper (H100, H200).
    pub const ALL: [Arch; 2] = [
        Arch {
            name: "sm_80",
            version: 80,
        },
        Arch {
            name: "sm_90a",
            version: 90,
        },
    ];

    /// The device properties cubecl-cuda 0.11.3 reads from such a device (its
    /// `runtime.rs`), as far as these kernels use them: the supported types, 32-lane planes,
    /// 1,024 units and 48 KiB of shared memory per cube.
    pub fn properties(&self) -> Arc<DeviceProperties> {
        let hardware = HardwareProperties {
            load_width: 128,
            vector_register_count: None,
            plane_size_min: 32,
            plane_size_max: 32,
            max_bindings: 1024,
            max_shared_memory_size: 48 * 1024,
            max_cube_count: (i32::MAX as u32, 65535, 65535),
            max_units_per_cube: 1024,
            max_cube_dim: (1024, 1024, 64),
            num_streaming_multiprocessors: Some(108),
            num_cpu_cores: None,
            last_level_cache_size: None,
            num_tensor_cores: None,
            min_tensor_cores_dim: None,
            max_vector_size: 16,
            cube_mma_reserved_shared_memory: 0,
        };
        let mut properties = DeviceProperties::new(
            Default::default(),
            MemoryDeviceProperties::new(1 << 30, 256),
            hardware,
            TimingMethod::Device,
            DeviceIdentity {
                name: format!("offline {}", self.name),
                fingerprint: format!("ptx_sm{}", self.version),
                physical: None,
            },
        );
        cubecl_cpp::register_supported_types(&mut properties);
        Arc::new(properties)
    }

    /// The CUDA target's properties (matrix layouts; unused by these kernels).
    pub fn target(&self) -> Arc<TargetProperties> {
        Arc::new(TargetProperties::default())
    }

    /// The C++ compiler's options cubecl-cuda sets for such a device.
    pub fn options(&self) -> CompilationOptions {
        CompilationOptions {
            warp_size: 32,
            supports_features: CppSupportedFeatures {
                fast_math: true,
                dp4a: true,
                grid_constants: true,
                clusters: self.version >= 90,
                elect_sync: self.version >= 90,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}

/// A buffer argument of `len` elements. Nothing is launched: the handle only gives the
/// argument its place among the kernel's bindings.
pub fn buffer(len: usize) -> BufferArg {
    let service = ServiceId::of::<Arch>(DeviceId {
        type_id: 0,
        index_id: 0,
    });
    let handle = Handle::new(service, StreamId { value: 0 }, (len * 4) as u64);
    // SAFETY: the kernel is never launched; the length only shapes its definition.
    unsafe { BufferArg::from_raw_parts(handle, len) }
}

/// NVRTC, when its library loads and the CUDA headers are found.
pub struct Nvrtc {
    include: String,
}

impl Nvrtc {
    /// NVRTC if `libnvrtc.so` loads and `GMT_CUDA_INCLUDE` is set.
    pub fn open() -> Option<Self> {
        let include = std::env::var("GMT_CUDA_INCLUDE").ok()?;
        // SAFETY: only tries to open the library.
        unsafe { cudarc::nvrtc::sys::is_culib_present() }.then_some(Self { include })
    }

    /// Compiles `source` for `arch`, or the compiler's log.
    pub fn compile(&self, source: &str, arch: &Arch) -> Result<(), String> {
        let source = CString::new(source).map_err(|e| e.to_string())?;
        let program = cudarc::nvrtc::result::create_program(source.as_c_str(), None)
            .map_err(|e| format!("{e:?}"))?;
        let options = [
            format!("--gpu-architecture={}", arch.name),
            format!("--include-path={}", self.include),
        ];
        // SAFETY: `program` was just created and is compiled once.
        let result = unsafe { cudarc::nvrtc::result::compile_program(program, &options) };
        if result.is_ok() {
            return Ok(());
        }
        // SAFETY: reads the log of the program just compiled.
        let log = unsafe { cudarc::nvrtc::result::get_program_log(program) }
            .map_err(|e| format!("{e:?}"))?;
        let log: Vec<u8> = log.iter().map(|&c| c as u8).collect();
        Err(String::from_utf8_lossy(&log).into_owned())
    }
}

//! The kernel files of burn-gmt-kernels, compiled here without their launch functions
//! (`#[cfg(not(gmt_cuda_codegen))]` there).

#[path = "../../../burn-gmt-kernels/src/cube/count.rs"]
pub mod count;
#[path = "../../../burn-gmt-kernels/src/cube/histogram.rs"]
pub mod histogram;
#[path = "../../../burn-gmt-kernels/src/cube/hold.rs"]
pub mod hold;
#[path = "../../../burn-gmt-kernels/src/cube/key.rs"]
pub mod key;
#[path = "../../../burn-gmt-kernels/src/cube/launch.rs"]
pub mod launch;
#[path = "../../../burn-gmt-kernels/src/cube/list.rs"]
pub mod list;
#[path = "../../../burn-gmt-kernels/src/cube/mask.rs"]
pub mod mask;
#[path = "../../../burn-gmt-kernels/src/cube/onepass.rs"]
pub mod onepass;
#[path = "../../../burn-gmt-kernels/src/cube/radix.rs"]
pub mod radix;
#[path = "../../../burn-gmt-kernels/src/cube/random.rs"]
pub mod random;
#[path = "../../../burn-gmt-kernels/src/cube/small.rs"]
pub mod small;

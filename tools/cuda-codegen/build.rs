//! Compiles the kernels' files without their Burn-facing launch functions.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(gmt_cuda_codegen)");
    println!("cargo:rustc-cfg=gmt_cuda_codegen");
    // The kernels crate's own feature, which its files mention.
    println!("cargo:rustc-check-cfg=cfg(feature, values(\"testing\"))");
}

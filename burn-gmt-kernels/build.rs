//! Tells the unit tests which vector code the building CPU has, so that a test of an
//! instruction set this CPU lacks is reported as ignored (with the reason) rather than passing
//! without running. The library itself asks the CPU at run time and never reads these cfgs.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(gmt_cpu_avx512)");
    println!("cargo::rustc-check-cfg=cfg(gmt_cpu_avx2)");
    #[cfg(target_arch = "x86_64")]
    {
        // Only when the tests run where they are built (not cross-compiled).
        let native = std::env::var("TARGET").ok() == std::env::var("HOST").ok();
        let popcnt = std::is_x86_feature_detected!("popcnt");
        if native && popcnt && std::is_x86_feature_detected!("avx512f") {
            println!("cargo::rustc-cfg=gmt_cpu_avx512");
        }
        if native && popcnt && std::is_x86_feature_detected!("avx2") {
            println!("cargo::rustc-cfg=gmt_cpu_avx2");
        }
    }
}

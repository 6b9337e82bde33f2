//! Enables the AVX-512 path (`cfg(sha512mb_avx512)`) when the compiler is at
//! least Rust 1.89, where the AVX-512 intrinsics became stable; older
//! compilers get the AVX2 path and the scalar fallback only.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sha512mb_avx512)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            // "rustc 1.95.0 (…)"
            let ver = v.split_whitespace().nth(1)?.to_owned();
            let mut parts = ver.split('.');
            let major: u32 = parts.next()?.parse().ok()?;
            let minor: u32 = parts.next()?.parse().ok()?;
            (major == 1).then_some(minor)
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=sha512mb_avx512");
    }
}

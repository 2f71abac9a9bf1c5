//! Build script: links with `link.x` and stamps the firmware version.
//!
//! The version comes from `AJOUR_FIRMWARE_VERSION` (set by the Ajour builder);
//! a plain `cargo build` falls back to `0.0.0-dev`.

use std::env;
use std::path::PathBuf;
use std::process;

fn main() {
    let dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let script = dir.join("link.x");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());

    println!("cargo:rerun-if-env-changed=AJOUR_FIRMWARE_VERSION");
    let version = match env::var("AJOUR_FIRMWARE_VERSION") {
        Ok(v) if !v.is_empty() => v,
        Ok(_) | Err(env::VarError::NotPresent) => "0.0.0-dev".to_string(),
        Err(env::VarError::NotUnicode(_)) => {
            eprintln!("error: AJOUR_FIRMWARE_VERSION is not valid UTF-8");
            process::exit(1);
        }
    };
    // The version is printed with semihosting SYS_WRITE0 (a NUL-terminated
    // string) on one line, so it must hold neither NUL nor line breaks.
    if version.chars().any(|c| c == '\0' || c == '\n' || c == '\r') {
        eprintln!("error: AJOUR_FIRMWARE_VERSION must not contain NUL or line breaks");
        process::exit(1);
    }
    println!("cargo:rustc-env=AJOUR_FIRMWARE_VERSION={version}");
}

//! Records the libnftnl and libmnl versions netnat is built against (pkg-config's
//! `--modversion`), for `netnat --version`.

use std::process::Command;

fn main() {
    for (lib, var) in [("libnftnl", "NETNAT_LIBNFTNL_VERSION"), ("libmnl", "NETNAT_LIBMNL_VERSION")] {
        println!("cargo:rustc-env={var}={}", modversion(lib));
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
}

/// The library's version as pkg-config reports it; "unknown" (with a build warning) when
/// pkg-config cannot say, so a build that links the library some other way still works.
fn modversion(lib: &str) -> String {
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    match Command::new(&pkg_config).args(["--modversion", lib]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => {
            println!("cargo:warning={pkg_config} --modversion {lib}: {}", String::from_utf8_lossy(&out.stderr).trim());
            "unknown".into()
        }
        Err(e) => {
            println!("cargo:warning=running {pkg_config} --modversion {lib}: {e}");
            "unknown".into()
        }
    }
}

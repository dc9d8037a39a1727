//! Finds Nix's C API (`libnixexprc`, Nix >= 2.24): the prefix in `NIX_C_API`, else pkg-config's
//! `nix-expr-c`. Without it the crate still builds — the safe part, which the tests use — but
//! the library has no `nix_plugin_entry` and is no plugin; a warning says so.
//!
//! Nix 2.24 to 2.33 pass primops a state pointer the C API cannot use as it is
//! (shim/eval_state_offset.cc says why); for them a small C++ file, compiled against that Nix's
//! headers, gives the correction. Nix 2.34.0 broke it differently and is refused; 2.34.1 fixed it.

use std::path::{Path, PathBuf};

/// What the build found of a Nix.
struct CApi {
    version: (u32, u32, u32),
    lib_dirs: Vec<PathBuf>,
    /// Include directories of its C++ headers (`eval.hh`).
    include_dirs: Vec<PathBuf>,
}

fn parse_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn from_prefix(prefix: &Path) -> Result<CApi, String> {
    let lib = prefix.join("lib");
    if !lib.join("libnixexprc.so").exists() {
        return Err(format!(
            "NIX_C_API={} has no lib/libnixexprc.so",
            prefix.display()
        ));
    }
    let pc = std::fs::read_to_string(lib.join("pkgconfig/nix-expr-c.pc")).unwrap_or_default();
    let version = pc
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(parse_version)
        .ok_or_else(|| format!("{} has no nix-expr-c.pc with a version", lib.display()))?;
    println!("cargo::rustc-link-search=native={}", lib.display());
    for name in ["nixexprc", "nixstorec", "nixutilc"] {
        if lib.join(format!("lib{name}.so")).exists() {
            println!("cargo::rustc-link-lib=dylib={name}");
        }
    }
    let include = prefix.join("include");
    Ok(CApi {
        version,
        lib_dirs: vec![lib],
        include_dirs: vec![include.join("nix"), include],
    })
}

fn from_pkg_config() -> Result<CApi, String> {
    let library = pkg_config::Config::new()
        .atleast_version("2.24")
        .probe("nix-expr-c")
        .map_err(|e| {
            format!(
                "Nix's C API (pkg-config nix-expr-c >= 2.24, or NIX_C_API=<prefix>) was not found: {}",
                e.to_string()
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default()
                    .trim()
            )
        })?;
    let include_dirs = pkg_config::Config::new()
        .cargo_metadata(false)
        .probe("nix-expr")
        .map(|cxx| cxx.include_paths)
        .unwrap_or_default();
    Ok(CApi {
        version: parse_version(&library.version),
        lib_dirs: library.link_paths,
        include_dirs,
    })
}

fn main() {
    println!("cargo::rerun-if-env-changed=NIX_C_API");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-changed=shim/eval_state_offset.cc");
    println!("cargo::rustc-check-cfg=cfg(nix_c_api)");
    println!("cargo::rustc-check-cfg=cfg(nix_state_offset)");
    let found = match std::env::var_os("NIX_C_API") {
        Some(prefix) => from_prefix(Path::new(&prefix)),
        None => from_pkg_config(),
    };
    let api = match found {
        Ok(api) => api,
        Err(why) => {
            println!("cargo::warning={why}; this build is not a Nix plugin");
            return;
        }
    };
    let (major, minor, patch) = api.version;
    if (major, minor, patch) == (2, 34, 0) {
        println!(
            "cargo::warning=Nix 2.34.0 passes primops a state its C API cannot use (fixed in 2.34.1); this build is not a Nix plugin"
        );
        return;
    }
    if (major, minor) < (2, 34) {
        let mut build = cc::Build::new();
        build
            .cpp(true)
            .warnings(false)
            .extra_warnings(false)
            .std("c++2a")
            .flag_if_supported("-Wno-invalid-offsetof")
            .file("shim/eval_state_offset.cc");
        for dir in &api.include_dirs {
            build.include(dir);
        }
        if let Err(error) = build.try_compile("microvm_nix_state_offset") {
            println!(
                "cargo::warning=Nix {major}.{minor}.{patch} needs shim/eval_state_offset.cc, which did not compile against its headers ({error}); this build is not a Nix plugin"
            );
            return;
        }
        println!("cargo::rustc-cfg=nix_state_offset");
    }
    // Nix loads the plugin with dlopen: it must find the C API's libraries by itself.
    for dir in &api.lib_dirs {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-rpath,{}", dir.display());
    }
    println!("cargo::rustc-cfg=nix_c_api");
}

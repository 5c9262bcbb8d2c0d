//! Compiles the C datapath with Debian's clang into OUT_DIR; the objects are embedded in the
//! binary with include_bytes!, so `sluice` ships as one file.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Objects to build: one per hook family, each a thin .c over bpf/lib.
const OBJECTS: &[&str] = &["sock_lb", "nodeport", "xdp", "xdp_watch"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let bpf = manifest.join("../../bpf").canonicalize().expect("bpf/ directory beside controller/");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // Relative, so cargo resolves it in whichever checkout builds: the target directory is shared
    // between checkouts (CI clones into a new directory each run), and an absolute path would
    // make another checkout's unchanged sources decide that this one's objects are fresh.
    println!("cargo:rerun-if-changed=../../bpf");
    println!("cargo:rerun-if-env-changed=SLUICE_CLANG");

    let clang = std::env::var("SLUICE_CLANG").unwrap_or_else(|_| "clang-19".into());
    if Command::new(&clang).arg("--version").output().is_err() {
        fail(&format!(
            "`{clang}` was not found. Sluice's BPF programs are built by Debian's clang; install it with\n\
             \x20   apt-get install clang-19 llvm-19 libbpf-dev\n(or point SLUICE_CLANG at another clang >= 15)"
        ));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("libbpf headers (/usr/include/bpf/bpf_helpers.h) are missing; install them with\n    apt-get install libbpf-dev");
    }
    let multiarch = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-linux-gnu", std::env::var("CARGO_CFG_TARGET_ARCH").unwrap()));

    for name in OBJECTS {
        let src = bpf.join(format!("{name}.c"));
        let obj = out.join(format!("{name}.o"));
        let result = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{}", bpf.join("include").display()))
            .arg(format!("-I{}", bpf.display()))
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("run clang");
        if !result.status.success() {
            fail(&format!("clang failed on {}:\n{}{}", src.display(), String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr)));
        }
    }
}

fn fail(message: &str) -> ! {
    eprintln!("\nerror: {message}\n");
    std::process::exit(1);
}

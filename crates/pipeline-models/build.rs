//! Build script: bakes the libtorch library folder into the rpath of
//! `pipeline-worker` (and of the tests) so they run without LD_LIBRARY_PATH,
//! and links `libtorch_cuda` explicitly when it exists there, because nothing
//! references its symbols directly and the linker would otherwise drop it,
//! leaving CUDA unavailable at run time even on a GPU machine.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-changed=build.rs");
    let Some(lib) = torch_lib_dir() else {
        println!(
            "cargo:warning=libtorch's lib folder was not found; pipeline-worker will need \
             LD_LIBRARY_PATH"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// libtorch's `lib` folder: from `LIBTORCH`, else from the Python torch package
/// that tch-sys itself uses under `LIBTORCH_USE_PYTORCH`.
fn torch_lib_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        return Some(PathBuf::from(dir));
    }
    if let Some(root) = std::env::var_os("LIBTORCH") {
        let lib = PathBuf::from(root).join("lib");
        if lib.is_dir() {
            return Some(lib);
        }
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import torch,os;print(os.path.join(os.path.dirname(torch.__file__),'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.is_dir().then_some(dir)
}

//! Bakes the run-time search path of libtorch (and the CUDA runtime libraries its CPU library
//! needs) into every binary, so that `svib` and the test binaries run without LD_LIBRARY_PATH,
//! and compiles the small C++ shim (src/shim/) over the libtorch calls tch does not expose.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let libtorch = std::env::var("LIBTORCH").map(PathBuf::from).unwrap_or_else(|_| root.join(".libtorch"));
    compile_shim(&libtorch);
    let mut dirs = vec![libtorch.join("lib")];
    // The lean wheel install keeps libcudart/libcupti in nvidia/cu13/lib beside torch/.
    if let Some(site) = libtorch.canonicalize().ok().and_then(|p| p.parent().map(|p| p.to_path_buf())) {
        dirs.push(site.join("nvidia").join("cu13").join("lib"));
        for sub in ["cublas", "cudnn", "cuda_runtime", "cuda_cupti", "nccl", "cusparse", "cufft", "curand", "cusolver", "nvjitlink", "cusparselt", "nvshmem"] {
            let d = site.join("nvidia").join(sub).join("lib");
            if d.is_dir() {
                dirs.push(d);
            }
        }
    }
    for d in dirs {
        let d = d.canonicalize().unwrap_or(d);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", d.display());
    }
}

/// Compiles src/shim/*.cpp against the headers of the same libtorch tch-sys links (the PyPI
/// wheel carries them under torch/include), with the same flags tch-sys uses for its own C++.
fn compile_shim(libtorch: &Path) {
    let files = ["src/shim/amp.cpp", "src/shim/dist.cpp"];
    for f in files.iter().chain(&["src/shim/common.hpp"]) {
        println!("cargo:rerun-if-changed={f}");
    }
    let include = libtorch.join("include");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag("-DUSE_DISTRIBUTED")
        .flag("-DUSE_C10D_GLOO")
        .files(files)
        .compile("svibshim");
}

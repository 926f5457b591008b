//! Bakes the run-time search path of libtorch (and the CUDA runtime libraries its CPU library
//! needs) into every binary, so that `svib` and the test binaries run without LD_LIBRARY_PATH.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let libtorch = std::env::var("LIBTORCH").map(PathBuf::from).unwrap_or_else(|_| root.join(".libtorch"));
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

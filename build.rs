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
    compile_nccl(&libtorch);
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

/// Compiles src/shim/nccl.cpp into $OUT_DIR/libsvib_nccl.so, which src/dist.rs embeds and loads
/// only on GPU ranks (linked against nothing: its symbols are libtorch_cuda's and NCCL's, resolved
/// when it is loaded after libtorch_cuda.so). Needs NCCL's header, which scripts/setup.sh takes
/// out of the NCCL wheel into nvidia/nccl/include beside torch/, and the CUDA runtime's (crt, cccl
/// extras); cuBLAS/cuSPARSE/cuSOLVER headers, which ATen's CUDA headers include only for handle and
/// status types, are stood in for by src/shim/cuda-stubs. Without the headers the file is empty
/// and a GPU rank says the binary was built without NCCL.
fn compile_nccl(libtorch: &Path) {
    println!("cargo:rerun-if-changed=src/shim/nccl.cpp");
    println!("cargo:rerun-if-changed=src/shim/cuda-stubs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("libsvib_nccl.so");
    let site = libtorch.canonicalize().ok().and_then(|p| p.parent().map(|p| p.join("nvidia")));
    let headers = ["nccl/include/nccl.h", "cu13/include/cuda_runtime.h", "cu13/include/crt/host_config.h", "cu13/include/nv/target"];
    for h in site.iter().flat_map(|n| headers.map(|h| n.join(h))) {
        // also while missing: the shim is built once scripts/setup.sh has put them there
        println!("cargo:rerun-if-changed={}", h.display());
    }
    let Some(nvidia) = site.filter(|n| headers.iter().all(|h| n.join(h).exists())) else {
        println!("cargo:warning=NCCL's or CUDA's headers not found beside {} (run scripts/setup.sh): GPU ranks will be refused", libtorch.display());
        std::fs::write(&out, b"").unwrap();
        return;
    };
    let include = libtorch.join("include");
    let mut cmd = cc::Build::new().cpp(true).get_compiler().to_command();
    cmd.args(["-shared", "-fPIC", "-O2", "-std=c++17", "-w", "-D_GLIBCXX_USE_CXX11_ABI=1", "-DGLOG_USE_GLOG_EXPORT", "-DUSE_DISTRIBUTED", "-DUSE_C10D_NCCL", "-DUSE_CUDA"]);
    for dir in [include.clone(), include.join("torch/csrc/api/include"), nvidia.join("nccl/include"), nvidia.join("cu13/include"), PathBuf::from("src/shim/cuda-stubs")] {
        cmd.arg("-I").arg(dir);
    }
    cmd.arg("src/shim/nccl.cpp").arg("-o").arg(&out);
    let status = cmd.status().expect("running the C++ compiler for src/shim/nccl.cpp");
    assert!(status.success(), "compiling src/shim/nccl.cpp failed");
}

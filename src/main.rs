fn main() {
    // before libtorch allocates anything large: see src/malloc.rs
    svib::malloc::tune_for_training();
    std::process::exit(svib::cli::main());
}

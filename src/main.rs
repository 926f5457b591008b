fn main() {
    std::process::exit(svib::cli::main());
}

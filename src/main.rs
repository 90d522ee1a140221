//! The litevisor binary: everything lives in the library; see `src/lib.rs` for the module map.

fn main() {
    std::process::exit(litevisor::cli::main());
}

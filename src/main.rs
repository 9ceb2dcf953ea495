//! The `pipeline` binary: see the library crate for the layers.

mod cli;

fn main() {
    std::process::exit(cli::main());
}

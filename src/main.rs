//! The `pipeline` binary: see the library crate for the layers.

fn main() {}

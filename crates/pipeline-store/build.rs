//! Build script: sqlx::migrate! embeds the migrations, so a new one must
//! rebuild.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../migrations");
}

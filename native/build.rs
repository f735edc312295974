//! Writes the C header of the engine's C ABI (src/bindings/ffi.rs) with cbindgen, to
//! `<target dir>/include/rdmanio.h`, where the C tests and C users find it.
use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| crate_dir.join("../target"));
    let header = target_dir.join("include/rdmanio.h");
    println!("cargo:rerun-if-changed=src/bindings/ffi.rs");
    println!("cargo:rerun-if-changed=src/rdma/connection.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the C header")
        .write_to_file(header);
}

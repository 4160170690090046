//! Bakes libtorch's folder into the binaries' rpath, so `fer` runs without
//! `LD_LIBRARY_PATH`. torch-sys publishes the folder through `links = "tch"`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = lib.to_string_lossy();
        match os.as_str() {
            "linux" => {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
                // libtorch_cpu is reached only through libtorch; keep it linked.
                println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            }
            "macos" => println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}"),
            _ => {}
        }
    }
}

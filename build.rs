//! Bakes libtorch's folder into the binaries' rpath, so `fer` runs without
//! `LD_LIBRARY_PATH`, and compiles the small C++ shim for what tch does not
//! bind (`csrc/`). torch-sys publishes the folder through `links = "tch"`.
fn main() {
    git_commit();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        shim(std::path::Path::new(&lib));
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

/// `csrc/autocast.cpp` against libtorch's headers, which sit beside its
/// library folder in both the wheel and the standalone archive.
fn shim(lib: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    let include = lib
        .parent()
        .expect("libtorch lib folder has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .file("csrc/autocast.cpp")
        .compile("fer_shim");
}

/// `FER_GIT_COMMIT`: the commit being built, `+dirty` with local changes,
/// for the provenance of every run.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            // `git status` may rewrite .git/index to refresh file stats;
            // the index is watched below, so that write would make the next
            // cargo run (`make test` after `make demo`) rebuild everything.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{c}+dirty")
            } else {
                c
            }
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=FER_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/index");
        // Edits that are not staged yet make the build dirty too.
        println!("cargo:rerun-if-changed=src");
    }
}

//! The `fer` binary: a thin `main` over the library's command line
//! (`fer::cli`); an error prints its chain of causes and exits with 2.

use std::process::ExitCode;

fn main() -> ExitCode {
    match fer::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

//! `cargo run -p ruvector-dag-plugin-modules -- DIR`: write every plugin module into DIR as
//! `<name>.wasm` (what `host-wasm/plugins/build.sh` does for the scripts and the README's
//! commands).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: ruvector-dag-plugin-modules DIR");
        return ExitCode::from(2);
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, bytes) in ruvector_dag_plugin_modules::MODULES {
        let path = dir.join(format!("{name}.wasm"));
        if let Err(e) = std::fs::write(&path, bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "plugins in {}: {} modules",
        dir.display(),
        ruvector_dag_plugin_modules::MODULES.len()
    );
    ExitCode::SUCCESS
}

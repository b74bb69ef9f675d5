//! Builds every attention plugin of `host-wasm/plugins` for wasm32-unknown-unknown: the useful
//! ones (misestimate, ensemble) and crate `evil` once per feature (one misbehaviour each), and
//! generates `modules.rs` with their bytes. The list of evil features is read from
//! `evil/Cargo.toml`, so a new one needs no edit here.
//!
//! The guest workspace is built with its own target directory (`target/plugins-build`) and
//! lock file, in release (its profile: LTO, `panic = "abort"`), with the environment cleaned of
//! what the outer build sets for the host (flags, wrappers such as clippy's, the target).

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    let here =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let plugins = here.join("../plugins");
    let repo = here.join("../..");
    let manifest = plugins.join("Cargo.toml");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!(
        "cargo:rerun-if-changed={}",
        repo.join("core-nostd/src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        repo.join("core-nostd/Cargo.toml").display()
    );

    ensure_wasm_target();
    let target_dir = repo.join("target/plugins-build");
    let mut modules = vec![
        ("misestimate".to_string(), "misestimate", None),
        ("ensemble".to_string(), "ensemble", None),
    ];
    for f in evil_features(&plugins.join("evil/Cargo.toml")) {
        modules.push((format!("evil_{f}"), "evil", Some(f)));
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("modules");
    std::fs::create_dir_all(&dir).expect("create OUT_DIR/modules");
    let mut code = String::from("/// Every module this crate built: (name, bytes).\npub const MODULES: &[(&str, &[u8])] = &[\n");
    for (name, krate, feature) in &modules {
        let mut cmd = cargo(&manifest, &target_dir);
        cmd.args(["-p", &format!("rvdag-plugin-{krate}")]);
        if let Some(f) = feature {
            cmd.args(["--features", f]);
        }
        run(cmd, name);
        let built = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("rvdag_plugin_{}.wasm", krate.replace('-', "_")));
        let dest = dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), dest.display()));
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            dest.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    writeln!(
        code,
        "/// The directory holding every module as `<name>.wasm`.\npub const DIR: &str = {:?};",
        dir.display().to_string()
    )
    .unwrap();
    std::fs::write(out.join("modules.rs"), code).expect("write modules.rs");
}

/// `cargo build --release --target wasm32-unknown-unknown` of the guest workspace, with the
/// host build's settings removed from the environment.
fn cargo(manifest: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_LTO",
    ] {
        cmd.env_remove(var);
    }
    cmd.args([
        "build",
        "-q",
        "--locked",
        "--release",
        "--target",
        TARGET,
        "--manifest-path",
    ])
    .arg(manifest)
    .arg("--target-dir")
    .arg(target_dir);
    cmd
}

fn run(mut cmd: Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("building the plugin {what} for {TARGET} failed ({s}): {cmd:?}"),
        Err(e) => panic!("cannot run cargo to build the plugin {what}: {e}"),
    }
}

/// The features of `evil/Cargo.toml`'s `[features]` table (each `name = []`).
fn evil_features(path: &Path) -> Vec<String> {
    println!("cargo:rerun-if-changed={}", path.display());
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == "[features]";
            continue;
        }
        if let Some(name) = line.strip_suffix("= []").map(str::trim) {
            if inside && !name.is_empty() {
                out.push(name.to_string());
            }
        }
    }
    assert!(!out.is_empty(), "{} lists no evil features", path.display());
    out
}

/// The wasm32 standard library must be installed; with rustup it is added when missing (as the
/// README's test command does), otherwise the error says how.
fn ensure_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = |root: &Option<PathBuf>| {
        root.as_ref()
            .is_some_and(|r| r.join("lib/rustlib").join(TARGET).join("lib").is_dir())
    };
    if installed(&sysroot) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        panic!(
            "the {TARGET} target is not installed and rustup could not add it: run `rustup target add {TARGET}` (the attention plugins the tests load are built for it)"
        );
    }
}

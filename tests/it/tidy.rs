//! Repository rules checked as tests: every Rust file says what it is for,
//! the macro crate is pinned to the exact version of `dfut`, and the
//! declared `rust-version` is honest as far as this machine can tell.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".git" | "ui") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in [
        "dfut",
        "dfut-macros",
        "dfut-net",
        "examples",
        "tests",
        "benches",
    ] {
        rust_files(&workspace().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` opening: {missing:?}"
    );
}

fn version_of(manifest: &str, key: &str) -> String {
    let text = std::fs::read_to_string(workspace().join(manifest)).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no `{key}` in {manifest}"));
    let start = line.find("version = \"").unwrap() + "version = \"".len();
    line[start..].split('"').next().unwrap().to_owned()
}

#[test]
fn the_macro_crate_is_pinned_to_the_facade_version() {
    let workspace_version = version_of("Cargo.toml", "version = ");
    let pinned = version_of("Cargo.toml", "dfut-macros = ");
    assert_eq!(pinned, format!("={workspace_version}"));
}

/// A `rust-version` as numbers (`1.88` is `[1, 88, 0]`).
fn rust_version(v: &str) -> Vec<u64> {
    let mut parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn the_declared_rust_version_covers_every_dependency_and_clippy_checks_it() {
    let declared = version_of("Cargo.toml", "rust-version");
    let clippy = std::fs::read_to_string(workspace().join("clippy.toml")).unwrap();
    assert!(
        clippy.contains(&format!("msrv = \"{declared}\"")),
        "clippy.toml's msrv is the declared rust-version {declared} (clippy then flags newer APIs)"
    );
    let meta = crate::util::json_output(
        std::process::Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--offline"])
            .current_dir(workspace()),
    );
    let newer: Vec<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            (rust_version(v) > rust_version(&declared)).then(|| format!("{} needs {v}", p["name"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "dependencies need a newer Rust than the declared {declared}: {newer:?}"
    );
}

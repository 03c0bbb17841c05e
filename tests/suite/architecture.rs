//! The house's rules that a reviewer would otherwise have to check by eye
//! (ARCHITECTURE.md, "Invariants"): the import graph has no circle and no
//! glob import between siblings, no id is cast to a SQL integer outside the
//! store, no function takes a loose list of arguments instead of a context.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn import_graph(src: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(crate_root().join("tests/tools/import_graph.py"))
        .arg(src)
        .arg("--check")
        .output()
        .expect("python3 runs the import graph check")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_import_graph_of_src_has_no_circle_and_no_glob_between_siblings() {
    let out = import_graph(&crate_root().join("src"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("circles: 0"), "{text}");
    assert!(
        text.contains("glob imports between siblings/parent: 0"),
        "{text}"
    );
}

#[test]
fn the_import_graph_check_fails_on_a_circle_and_on_a_sibling_glob() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A;\n").unwrap();
    std::fs::write(src.join("b.rs"), "use crate::a::A;\npub struct B;\n").unwrap();
    let out = import_graph(src);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a circle passed: {text}");
    assert!(text.contains("circles: 1"), "{text}");

    std::fs::create_dir(src.join("c")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod c;\n").unwrap();
    std::fs::remove_file(src.join("a.rs")).unwrap();
    std::fs::remove_file(src.join("b.rs")).unwrap();
    std::fs::write(src.join("c/mod.rs"), "mod d;\nmod e;\n").unwrap();
    std::fs::write(src.join("c/d.rs"), "use super::e::*;\npub struct D;\n").unwrap();
    std::fs::write(src.join("c/e.rs"), "pub struct E;\n").unwrap();
    let out = import_graph(src);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a sibling glob passed: {text}");
    assert!(text.contains("c::d use super::e::*"), "{text}");
}

#[test]
fn no_cast_to_a_sql_integer_outside_the_store_and_no_argument_lists_without_a_type() {
    let mut files = Vec::new();
    rust_files(&crate_root().join("src"), &mut files);
    let store = crate_root().join("src/audit");
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{}:{}: {}", file.display(), n + 1, line.trim());
            let cast = line.contains("as i64") && !file.starts_with(&store);
            if cast || line.contains("too_many_arguments") {
                found.push(at);
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

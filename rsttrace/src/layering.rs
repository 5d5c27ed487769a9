//! Imports point down only: every `crate::` path in rsttrace/src (test
//! modules included) names a module of the file's own layer or a lower one,
//! and no files import each other in a circle within a layer either.
//! The layers are the ones lib.rs describes; a new top-level module must be
//! given a layer here before this test passes. `super::` paths (a child
//! using its parent's items) are not followed.
//!
//! And no source file of the workspace grows over `MAX_LINES` (tests and
//! the few tables in `LONG_TABLES` aside): a file that big has more than
//! one job, so it is split by responsibility.
//!
//! Unit tests, not integration tests: they read the sources from the
//! tree at run time, and the VM suites run the integration tests in a
//! guest that has only the binaries.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first.
const LAYERS: &[&[&str]] = &[
    &["model", "test_support"],
    &["kernel"],
    &["collect"],
    &["enrich"],
    &["classify", "correlate", "filter", "record"],
    &["output"],
    &["cli", "priority", "signals"],
    &["cmd"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a source file belongs to; None for lib.rs and
/// main.rs, the crate's roots, which may use everything, and for this
/// file, whose `crate::` strings are test data.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" | "layering.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `code` names through `crate::`, with `crate::{a,
/// b::c}` groups expanded to `a` and `b`. Comments are dropped first: doc
/// links are not imports.
fn crate_paths(code: &str) -> Vec<String> {
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        // `$crate::` and `rsttrace_crate::` are other paths.
        if before.is_some_and(|c| is_ident(c) || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: the first identifier after the
            // opening brace and after each comma at depth 1.
            let mut depth = 1;
            let mut expect_name = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if expect_name && depth == 1 && is_ident(c) => {
                        let name: String =
                            group[i..].chars().take_while(|&c| is_ident(c)).collect();
                        found.push(name);
                        expect_name = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            found.push(name);
        }
    }
    found
}

fn upward_imports(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    assert!(files.len() > 20, "no sources under {}", src.display());
    let mut bad = Vec::new();
    for file in &files {
        let Some(module) = top_module(src, file) else {
            continue;
        };
        let rel = file.strip_prefix(src).unwrap().display();
        let Some(own) = layer_of(&module) else {
            bad.push(format!("{rel}: module `{module}` has no layer in LAYERS"));
            continue;
        };
        for name in crate_paths(&fs::read_to_string(file).unwrap()) {
            match layer_of(&name) {
                Some(l) if l <= own => {}
                Some(_) => bad.push(format!(
                    "{rel}: `{module}` imports `crate::{name}` from above"
                )),
                None => bad.push(format!("{rel}: `crate::{name}` has no layer in LAYERS")),
            }
        }
    }
    bad
}

/// A file's module path: `output/json/write.rs` -> `output::json::write`.
fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<&str> = rel.iter().map(|p| p.to_str().unwrap()).collect();
    if parts.last() == Some(&"mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The full `crate::a::b::c` paths in `code` (comments dropped; groups not
/// expanded: the top-level check above handles them).
fn full_crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| is_ident(c) || c == '$') {
                continue;
            }
            let path: String = rest
                .chars()
                .take_while(|&c| is_ident(c) || c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_string());
        }
    }
    found
}

/// Files that import each other in a circle: for each file, the files its
/// `crate::` paths name (the longest module prefix of each path that is a
/// file), then a depth-first search for a path back to a file on the stack.
fn import_cycles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, Vec<String>> = files
        .iter()
        .map(|f| (module_path(src, f), Vec::new()))
        .collect();
    graph.remove("lib");
    graph.remove("main");
    graph.remove("layering");
    for file in &files {
        let from = module_path(src, file);
        if !graph.contains_key(&from) {
            continue;
        }
        for path in full_crate_paths(&fs::read_to_string(file).unwrap()) {
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len())
                .rev()
                .map(|k| segs[..k].join("::"))
                .find(|m| graph.contains_key(m));
            if let Some(to) = target.filter(|to| *to != from) {
                graph.get_mut(&from).unwrap().push(to);
            }
        }
    }
    for targets in graph.values_mut() {
        targets.sort();
        targets.dedup();
    }
    fn visit(
        m: &str,
        graph: &BTreeMap<String, Vec<String>>,
        stack: &mut Vec<String>,
        done: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut circle = stack[at..].to_vec();
            circle.push(m.to_string());
            cycles.push(circle.join(" -> "));
            return;
        }
        if done.iter().any(|d| d == m) {
            return;
        }
        stack.push(m.to_string());
        for to in &graph[m] {
            visit(to, graph, stack, done, cycles);
        }
        stack.pop();
        done.push(m.to_string());
    }
    let (mut stack, mut done, mut cycles) = (Vec::new(), Vec::new(), Vec::new());
    for m in graph.keys() {
        visit(m, &graph, &mut stack, &mut done, &mut cycles);
    }
    cycles
}

#[test]
fn no_files_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let cycles = import_cycles(&src);
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = upward_imports(&src);
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn crate_paths_are_found_in_every_spelling() {
    let code = "use crate::model::cause::CauseId;\n\
                // see crate::cmd (a comment, not an import)\n\
                let x = crate::output::rfc3339(t);\n\
                use crate::{\n    enrich::scope,\n    collect::{probes, loader},\n};\n\
                macro_rules! m { () => { $crate::cli::x } }";
    assert_eq!(crate_paths(code), ["model", "output", "enrich", "collect"]);
}

/// Lines a source file may have, its inline tests included.
const MAX_LINES: usize = 700;

/// Files allowed over `MAX_LINES`, relative to the workspace: tables that
/// read best whole. Each must still be over the limit (else drop it here).
const LONG_TABLES: &[&str] = &[
    // The kernel ABI: every layout and constant the programs share with
    // userspace, one definition each (issue 15), all with their size asserts.
    "rsttrace-ebpf/src/abi.rs",
];

/// Whether `rel` is test code: a `tests.rs` (a test module moved beside
/// its code) or anything under a `tests/` directory.
fn is_test_file(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "tests.rs") || rel.iter().any(|c| c == "tests")
}

/// Non-test files under `dirs` (relative to `root`) with more than `max`
/// lines, and the `allowed` files that are not, each as a message.
fn oversized(root: &Path, dirs: &[&str], max: usize, allowed: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    let mut bad = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(root).unwrap();
        if is_test_file(rel) {
            continue;
        }
        let lines = fs::read_to_string(file).unwrap().lines().count();
        let listed = allowed.iter().any(|a| Path::new(a) == rel);
        if lines > max && !listed {
            bad.push(format!(
                "{}: {lines} lines; split it by responsibility \
                 (tests go to a sibling tests.rs)",
                rel.display()
            ));
        } else if lines <= max && listed {
            bad.push(format!(
                "{}: {lines} lines, listed as a long table: drop it from the list",
                rel.display()
            ));
        }
    }
    for a in allowed {
        if !root.join(a).is_file() {
            bad.push(format!("{a}: listed as a long table but not found"));
        }
    }
    bad
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dirs = ["rsttrace/src", "rsttrace-ebpf/src", "xtask/src"];
    let bad = oversized(root, &dirs, MAX_LINES, LONG_TABLES);
    assert!(
        bad.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_line_limit_spares_tests_and_listed_tables_only() {
    let root = std::env::temp_dir().join(format!("rsttrace-layering-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    for dir in ["src/big", "src/big/tests", "src/table"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    let text = |n: usize| "x\n".repeat(n);
    fs::write(root.join("src/small.rs"), text(3)).unwrap();
    fs::write(root.join("src/big/mod.rs"), text(4)).unwrap();
    fs::write(root.join("src/big/tests.rs"), text(9)).unwrap();
    fs::write(root.join("src/big/tests/cases.rs"), text(9)).unwrap();
    fs::write(root.join("src/table/abi.rs"), text(9)).unwrap();
    fs::write(root.join("src/grown.rs"), text(5)).unwrap();
    let found = oversized(&root, &["src"], 4, &["src/table/abi.rs", "src/small.rs"]);
    fs::remove_dir_all(&root).unwrap();
    assert_eq!(
        found,
        [
            "src/grown.rs: 5 lines; split it by responsibility (tests go to a sibling tests.rs)",
            "src/small.rs: 3 lines, listed as a long table: drop it from the list",
        ]
    );
}

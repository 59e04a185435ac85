//! What ARCHITECTURE.md claims of the source, checked: dependencies between
//! the library's top-level modules point one way (no cycle), and the library
//! forbids `unsafe` with nothing deprecated allowed around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::helpers::repo;

/// The top-level module of `path` (under `src/`).
fn module_of(src: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!["lib", "main", "bench", "proptests"].contains(&name)).then(|| name.to_owned())
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Module → the modules it names as `crate::X`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        let used = graph.entry(module.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                used.insert(name);
            }
        }
    }
    graph
}

#[test]
fn module_dependencies_point_one_way() {
    let graph = dependencies();
    assert!(graph.len() > 10, "{graph:?}");
    // Depth-first search for a cycle, reporting its path.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == node) {
            panic!("a dependency cycle: {} -> {node}", path[at..].join(" -> "));
        }
        if done.contains(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
    // The diagram's lower layers know nothing of the upper ones.
    for (low, high) in [
        ("cache", "backends"),
        ("backends", "workload"),
        ("cache", "health"),
    ] {
        assert!(
            !graph[low].contains(high),
            "{low} depends on {high}: {:?}",
            graph[low]
        );
    }
}

#[test]
fn the_library_forbids_unsafe_and_allows_nothing_deprecated() {
    let lib = std::fs::read_to_string(repo("src/lib.rs")).unwrap();
    assert!(lib.contains("#![forbid(unsafe_code)]"));
    let mut files = Vec::new();
    rust_files(&repo("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("allow(deprecated)"),
            "{} allows a deprecated call",
            file.display()
        );
    }
}

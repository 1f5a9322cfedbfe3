//! The dependency rules of ARCHITECTURE.md inside each crate, checked on the source: no two
//! top-level modules of a crate import each other, even through others (no cycles), and `api`
//! never touches Redis or sockets. That the engine never reaches the HTTP layer is the
//! compiler's to keep (the engine crate cannot name it); that it builds without poem or hyper
//! is checked on its manifest here and by `cargo tree` in `scripts/test`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).unwrap() {
        files.extend(rust_files(&entry.unwrap().path()));
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "rs"));
    files
}

/// The crate modules a file names: `crate::x`, and every top-level name in `crate::{x, y::z}`.
fn crate_modules(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each top-level item of the group: `x` of `x::{…}` or `x`.
            let (mut depth, mut name, mut first) = (0, String::new(), true);
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => first = true,
                    c if depth == 0 && first && (c.is_alphanumeric() || c == '_') => name.push(c),
                    _ if depth == 0 && !name.is_empty() => {
                        found.insert(std::mem::take(&mut name));
                        first = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

fn src(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path)
}

fn engine_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/engine/src")
}

/// Lines of non-test code: everything before a `#[cfg(test)]` module.
fn product_code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Each top-level module of the crate under `root` and the modules of the same crate its
/// product code names (`model.rs` files, the loom models, are test code).
fn module_graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(root)
        .into_iter()
        .filter(|f| f.file_name().is_none_or(|n| n != "model.rs"))
    {
        let rel = file.strip_prefix(root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        // Comments name modules without depending on them (a doc link, which the spec's
        // descriptions carry verbatim): only code counts.
        let code: String = product_code(&file)
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let uses = crate_modules(&code);
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(uses.into_iter().filter(|m| *m != top));
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| modules.contains(m));
    }
    graph
}

/// The cycles of `graph`, each as the path that closes it (`a -> b -> a`).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            found.push(cycle.join(" -> "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_owned());
        for next in &graph[node] {
            visit(graph, next, path, done, found);
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let (mut done, mut found) = (BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        visit(graph, node, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_module_of_either_crate_depends_on_itself() {
    for root in [src(""), engine_src()] {
        let graph = module_graph(&root);
        assert!(graph.len() > 5, "{} read: {graph:?}", root.display());
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "module cycles in {}:\n{}",
            root.display(),
            found.join("\n")
        );
    }
}

#[test]
fn the_cycle_check_sees_a_cycle_through_a_third_module() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&graph), ["a -> b -> c -> a"]);
}

#[test]
fn the_engine_builds_without_the_http_stack() {
    let manifest =
        std::fs::read_to_string(engine_src().parent().unwrap().join("Cargo.toml")).unwrap();
    let deps = &manifest[manifest.find("[dependencies]").unwrap()..];
    let deps = &deps[..deps.find("\n[dev-dependencies]").unwrap_or(deps.len())];
    let mut broken = Vec::new();
    for line in deps.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let name = line.split(['=', ' ']).next().unwrap_or("");
        if name.starts_with("hyper") || name == "poem" || name == "h2" {
            broken.push(line.to_owned());
        }
        if name == "poem-openapi" && !line.contains("optional = true") {
            broken.push(line.to_owned());
        }
    }
    assert!(
        broken.is_empty(),
        "the engine depends on the HTTP stack:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_api_never_touches_redis_or_sockets() {
    let mut broken = Vec::new();
    for file in rust_files(&src("api")) {
        let code = product_code(&file);
        for module in crate_modules(&code) {
            if module == "server" {
                broken.push(format!("{} uses crate::server", file.display()));
            }
        }
        for needle in [
            "redis",
            "deadpool",
            "TcpStream",
            "tokio::net",
            "hyper::",
            "store::memory",
            "remote_addr",
        ] {
            if code.contains(needle) {
                broken.push(format!("{} mentions {needle}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependency rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    let found = crate_modules(
        "use crate::{\n    api::{self, errors::x},\n    store::{Job, LogStore},\n    wire,\n};\nlet a = crate::server::run;",
    );
    assert_eq!(
        found,
        ["api", "server", "store", "wire"].map(String::from).into()
    );
}

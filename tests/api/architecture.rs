//! The dependency rules of ARCHITECTURE.md, checked on the source: the engine (`store`,
//! `fanout`, `stream`, `history`, `download`, `search`, `paging`, `ansi`, `wire`) never reaches up into the HTTP layer (`api`, `app`,
//! `server`, `cors`, `auth`), and `api` never touches Redis or sockets.

use std::{
    collections::BTreeSet,
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

/// Lines of non-test code: everything before a `#[cfg(test)]` module.
fn product_code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[test]
fn the_engine_never_reaches_into_the_http_layer() {
    const HTTP: &[&str] = &["api", "app", "server", "cors", "auth", "dev"];
    let mut broken = Vec::new();
    for part in [
        "store",
        "fanout",
        "stream",
        "wire",
        "history.rs",
        "download.rs",
        "search.rs",
        "paging.rs",
        "ansi.rs",
    ] {
        // `model.rs` files are loom models: test code, built only under `--cfg buildlogs_loom`,
        // and one of them drives the feed's puts through the server's real `Wire`.
        for file in rust_files(&src(part))
            .into_iter()
            .filter(|f| f.file_name().is_none_or(|n| n != "model.rs"))
        {
            let code = product_code(&file);
            for module in crate_modules(&code) {
                if HTTP.contains(&module.as_str()) {
                    broken.push(format!("{} uses crate::{module}", file.display()));
                }
            }
            for needle in [
                "poem::",
                "hyper::",
                "super::super::api",
                "super::super::server",
            ] {
                if code.contains(needle) {
                    broken.push(format!("{} uses {needle}", file.display()));
                }
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

//! The import rule of the house (src/), checked on every test run: a module imports only from the
//! layers below it (or from itself). The floors follow docs/architecture.md.

/// Top-level modules from the bottom floor up; modules on one floor do not import each other.
const FLOORS: &[&[&str]] = &[
    &["domain"],
    // The Prometheus series the pool and the HTTP layer feed.
    &["metrics"],
    // Credentials without IO; config resolves keys into them.
    &["credentials"],
    &["config"],
    &["store"],
    &["error"],
    &["input", "extract", "telemetry", "state"],
    &["services", "accounts", "auth"],
    &["routes", "jobs"],
    // The demo data set: written through services and scanned by `jobs`.
    &["demo"],
    &["startup"],
    &["cli"],
];

/// Modules that only the named modules may import, whatever their floors allow.
const ONLY_FROM: &[(&str, &[&str])] = &[("demo", &["cli"])];

fn floor(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

/// `crate::x` paths in the non-test part of `source`.
fn imports(source: &str) -> Vec<String> {
    let code = source.split("\n#[cfg(test)]").next().unwrap_or(source);
    let mut out = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default();
            let top = top.trim_end_matches(".rs");
            let Some(from) = floor(top) else { continue };
            let source = std::fs::read_to_string(&path).expect("source");
            for to in imports(&source) {
                let Some(target) = floor(&to) else { continue };
                let reserved = ONLY_FROM
                    .iter()
                    .any(|(only, importers)| to == *only && to != top && !importers.contains(&top));
                let allowed = (to == top || target < from) && !reserved;
                if !allowed {
                    wrong.push(format!("{} imports crate::{to}", rel.display()));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "imports that run up a layer:\n{}", wrong.join("\n"));
}

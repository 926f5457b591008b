//! The top-level modules form a pipeline without import cycles (issue 16): every `crate::X`
//! path in a module's files (tests included) is an edge; the graph must be acyclic.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
        if e.is_dir() {
            rust_files(&e, out);
        } else if e.extension().is_some_and(|x| x == "rs") {
            out.push(e);
        }
    }
}

/// The modules `text` names as `crate::NAME`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + 7..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(!rest.starts_with('{'), "grouped `crate::{{...}}` imports hide edges; name each module");
        found.insert(name);
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let modules: Vec<String> = lib.lines().filter_map(|l| l.strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';').to_string()).collect();
    let mut g = BTreeMap::new();
    for m in &modules {
        let mut files = vec![];
        if src.join(m).is_dir() {
            rust_files(&src.join(m), &mut files);
        }
        if src.join(format!("{m}.rs")).is_file() {
            files.push(src.join(format!("{m}.rs")));
        }
        let mut deps = BTreeSet::new();
        for f in files {
            deps.extend(crate_paths(&std::fs::read_to_string(f).unwrap()).into_iter().filter(|d| d != m && modules.contains(d)));
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// A cycle through `at`, if any (depth-first search).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>, at: &str, path: &mut Vec<String>, done: &mut BTreeSet<String>) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|p| p == at) {
        return Some(path[i..].iter().cloned().chain([at.to_string()]).collect());
    }
    if done.contains(at) {
        return None;
    }
    path.push(at.to_string());
    for d in &g[at] {
        if let Some(c) = cycle(g, d, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(at.to_string());
    None
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let g = graph();
    assert!(g.len() >= 10 && g["cli"].contains("train") && g["train"].contains("methods"), "the scan finds the modules and their edges: {g:?}");
    let mut done = BTreeSet::new();
    for m in g.keys() {
        if let Some(c) = cycle(&g, m, &mut vec![], &mut done) {
            panic!("import cycle: {}", c.join(" -> "));
        }
    }
    // the lower layers know nothing of training
    for low in ["data", "augment", "models", "methods", "eval", "interop"] {
        assert!(!g[low].contains("train") && !g[low].contains("cli") && !g[low].contains("experiments"), "{low} -> {:?}", g[low]);
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut g = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a")] {
        g.insert(a.to_string(), BTreeSet::from([b.to_string()]));
    }
    assert_eq!(cycle(&g, "a", &mut vec![], &mut BTreeSet::new()).unwrap(), ["a", "b", "c", "a"]);
}

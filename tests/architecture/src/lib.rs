//! Reads the workspace's sources and manifests and answers the questions
//! ARCHITECTURE.md's invariants ask: which modules import each other in a
//! circle, how the non-test lines split between crates, which crates a crate
//! depends on, where the system clock is read. Text only: no compiler, no
//! network; `cargo test -p palisade-architecture -- --nocapture` prints the
//! figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace() -> PathBuf {
    // The directory cargo runs the test from, not the one it was compiled in:
    // a build cache shared between checkouts may hold a binary built in another.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../..")
}

/// Every `.rs` file below `dir`, sorted.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A file's code before its unit tests (the first `#[cfg(test)]` line), with
/// comments removed.
pub fn code_before_tests(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Non-test lines of a crate's `src/`: every line of each file up to its
/// unit tests.
pub fn non_test_lines(src: &Path) -> usize {
    rust_files(src)
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.lines()
                .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
                .count()
        })
        .sum()
}

/// The crates under `crates/`, by name, with their directories.
pub fn crates() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(workspace().join("crates")) {
        for e in entries.flatten() {
            let dir = e.path();
            if dir.join("Cargo.toml").exists() {
                out.insert(e.file_name().to_string_lossy().into_owned(), dir);
            }
        }
    }
    out
}

/// A crate's normal (not dev, not build) dependencies, by name.
pub fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_default();
    let Ok(doc) = text.parse::<toml::Table>() else {
        return BTreeSet::new();
    };
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default()
}

/// A module path inside a crate, e.g. `["operator", "fleet"]`; the crate root
/// is the empty path.
pub type ModPath = Vec<String>;

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_owned());
        }
    }
    // A binary under src/bin/ is a crate root of its own.
    if parts.first().is_some_and(|p| p == "bin") {
        return vec![];
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The `::`-separated path that starts at byte `at` of `code`.
fn path_at(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    let end = rest
        .find(|c: char| !(is_ident(c) || c == ':'))
        .unwrap_or(rest.len());
    rest[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Paths a module's code names through `crate::`, `super::` or `self::`,
/// resolved to absolute module paths (the longest known module prefix).
fn references(code: &str, me: &ModPath, modules: &BTreeSet<ModPath>) -> BTreeSet<ModPath> {
    let mut out = BTreeSet::new();
    let mut expanded = code.to_owned();
    // `use crate::{a, b::c}` names several paths: expand one level of braces.
    for (open, _) in code.match_indices("::{") {
        let head_start = code[..open]
            .rfind(|c: char| !(is_ident(c) || c == ':'))
            .map_or(0, |i| i + 1);
        let head = &code[head_start..open];
        if let Some(close) = code[open..].find('}') {
            for item in code[open + 3..open + close].split(',') {
                let item = item.trim().split(" as ").next().unwrap_or("").trim();
                if !item.is_empty() && !item.contains('{') {
                    expanded.push_str(&format!("\n{head}::{item}\n"));
                }
            }
        }
    }
    for (i, _) in expanded.match_indices("::") {
        // Only the start of a path.
        let start = expanded[..i]
            .rfind(|c: char| !is_ident(c))
            .map_or(0, |j| j + 1);
        if start > 0 && expanded[..start].ends_with(':') {
            continue;
        }
        let first = &expanded[start..i];
        let path = path_at(&expanded, start);
        let abs: ModPath = match first {
            "crate" => path[1..].to_vec(),
            "self" => me
                .iter()
                .cloned()
                .chain(path[1..].iter().cloned())
                .collect(),
            "super" => {
                let mut base = me.clone();
                let mut rest = &path[..];
                while rest.first().is_some_and(|p| p == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                base.into_iter().chain(rest.iter().cloned()).collect()
            }
            _ => continue,
        };
        let mut best: Option<ModPath> = None;
        for n in (1..=abs.len()).rev() {
            if modules.contains(&abs[..n].to_vec()) {
                best = Some(abs[..n].to_vec());
                break;
            }
        }
        if let Some(target) = best {
            out.insert(target);
        }
    }
    out
}

/// The module graph of a crate's non-test code: an edge from a module to each
/// module it names, except its own descendants (a parent names its children
/// to declare and route to them; that is structure, not a cycle) and itself.
pub fn module_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let files = rust_files(src);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for f in &files {
        let me = module_of(src, f);
        let code = code_before_tests(&std::fs::read_to_string(f).unwrap_or_default());
        let refs = references(&code, &me, &modules);
        let entry = graph.entry(me.clone()).or_default();
        for r in refs {
            if r != me && !r.starts_with(&me) {
                entry.insert(r);
            }
        }
    }
    graph
}

/// The module import cycles of a graph: its strongly connected components of
/// more than one module (Tarjan), each sorted.
pub fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct T<'a> {
        g: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a ModPath) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on.insert(v);
            if let Some(ws) = self.g.get(v) {
                for w in ws {
                    let Some((w, _)) = self.g.get_key_value(w) else {
                        continue;
                    };
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low[v];
                        self.low.insert(v, lv.min(lw));
                    } else if self.on.contains(w) {
                        let iw = self.index[w];
                        let lv = self.low[v];
                        self.low.insert(v, lv.min(iw));
                    }
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ModPath {
        s.split("::")
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn paths_resolve_through_crate_super_self_and_braces() {
        let modules: BTreeSet<ModPath> = ["", "a", "b", "b::c", "d"].iter().map(|s| p(s)).collect();
        let code = "use crate::a::Thing;\nuse super::c::f;\nuse crate::{d, b::c::G};\nfn x() { self::y(); }";
        let refs = references(code, &p("b::e"), &modules);
        assert!(refs.contains(&p("a")));
        assert!(refs.contains(&p("b::c")));
        assert!(refs.contains(&p("d")));
        assert!(!refs.contains(&p("b::e::y")));
    }

    #[test]
    fn finds_a_cycle_and_only_the_cycle() {
        let mut g: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
        g.insert(p("a"), [p("b")].into());
        g.insert(p("b"), [p("c")].into());
        g.insert(p("c"), [p("a")].into());
        g.insert(p("d"), [p("a")].into());
        assert_eq!(cycles(&g), vec![vec![p("a"), p("b"), p("c")]]);
        g.insert(p("c"), BTreeSet::new());
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn code_before_tests_stops_at_the_test_module_and_drops_comments() {
        let c = code_before_tests("use crate::a; // crate::b\n#[cfg(test)]\nuse crate::c;");
        assert!(c.contains("crate::a") && !c.contains("crate::b") && !c.contains("crate::c"));
    }
}

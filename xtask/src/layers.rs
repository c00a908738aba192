//! `cargo xtask layers`: reads each crate's `use` lines and paths and checks that its files,
//! and at every folder its files and sub-folders, import one another without a cycle; prints
//! each crate's files bottom up (each file imports only from files above it in the list).
//!
//! It reads text, not the compiler's view: a reference is a path that starts with `crate::`,
//! `super::`, `self::` or the name of a module the file declares, in `use` lines and in code
//! (comments, doc links and `#[cfg(test)]` modules are left out). A path that lands on a module
//! which re-exports the name (`pub use x::Name`) is followed to where the name is defined, so a
//! `mod.rs` that only declares and re-exports is a door, not a room.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// The crates whose layers are checked, by their source folder.
pub const CRATES: &[&str] = &[
    "mqrs-runtime/src",
    "mqrs-macros/src",
    "mqrs-viewer/src",
    "demo/src",
];

/// One crate's files and the references between them.
pub struct Graph {
    /// File (relative to the source folder) → file → the paths that tie them.
    pub edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Every file read.
    pub files: BTreeSet<String>,
}

/// What a source file declares and refers to.
struct File {
    module: Vec<String>,
    /// Child modules declared with `mod x;` or `mod x {`.
    children: BTreeSet<String>,
    /// Name → the path it is re-exported from (absolute, crate-relative segments; empty for a
    /// name of another crate).
    reexports: HashMap<String, Vec<String>>,
    /// Every referenced path, absolute.
    refs: Vec<Vec<String>>,
}

/// Reads every `.rs` file under `src` (test files left out) into a graph of references.
pub fn read(src: &Path) -> Result<Graph, String> {
    let mut paths = Vec::new();
    walk(src, &mut paths).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let mut files: BTreeMap<String, File> = BTreeMap::new();
    let mut by_module: HashMap<Vec<String>, String> = HashMap::new();
    for p in paths {
        let rel = p
            .strip_prefix(src)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .replace('\\', "/");
        if rel.ends_with("/tests.rs") || rel == "tests.rs" || rel.contains("tests/") {
            continue;
        }
        let text = fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let module = module_of(&rel);
        let file = parse(&module, &text);
        by_module.insert(module, rel.clone());
        files.insert(rel, file);
    }
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (name, f) in &files {
        if name == "lib.rs" || name == "main.rs" || name.ends_with("/main.rs") {
            // A crate root (a binary's too) declares its modules; it is the top of its picture.
            continue;
        }
        for r in &f.refs {
            if let Some(target) = resolve(r, &files, &by_module, 0) {
                if &target != name {
                    edges
                        .entry(name.clone())
                        .or_default()
                        .entry(target)
                        .or_default()
                        .insert(r.join("::"));
                }
            }
        }
    }
    Ok(Graph {
        edges,
        files: files.keys().cloned().collect(),
    })
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `a/b.rs` and `a/b/mod.rs` are module `a::b`; `lib.rs` and `main.rs` are the root.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The file that defines what `path` names: the deepest module file on it, followed through
/// that module's re-exports.
fn resolve(
    path: &[String],
    files: &BTreeMap<String, File>,
    by_module: &HashMap<Vec<String>, String>,
    depth: usize,
) -> Option<String> {
    let mut i = path.len();
    let file = loop {
        if let Some(f) = by_module.get(&path[..i]) {
            break f;
        }
        if i == 0 {
            return None;
        }
        i -= 1;
    };
    if depth < 8 {
        if let Some(next) = path.get(i) {
            if let Some(to) = files.get(file).and_then(|f| f.reexports.get(next)) {
                if to.is_empty() {
                    return None; // another crate's
                }
                let mut full = to.clone();
                full.extend_from_slice(&path[i + 1..]);
                return resolve(&full, files, by_module, depth + 1);
            }
        }
    }
    Some(file.clone())
}

/// Removes comments, string literals and items compiled for tests only.
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            // A raw string `r#"..."#` is skipped to its closing quote and hashes.
            let hashes = text[..i].chars().rev().take_while(|c| *c == '#').count();
            let raw = i > hashes && b[i - hashes - 1] == b'r';
            i += 1;
            while i < b.len() {
                if !raw && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b'"' && (!raw || text[i + 1..].starts_with(&"#".repeat(hashes))) {
                    i += 1 + if raw { hashes } else { 0 };
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else {
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    // `#[cfg(test)]` followed by an item: drop the item (to its matching brace or `;`).
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = test_only(rest) {
        result.push_str(&rest[..at]);
        let after = &rest[at..];
        let mut depth = 0usize;
        let mut end = after.len();
        for (j, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    result.push_str(rest);
    result
}

/// Where the first attribute that compiles an item for tests only (`#[cfg(test)]`,
/// `#[cfg(all(test, ...))]`) starts in `code`.
fn test_only(code: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = code[from..].find("#[cfg(") {
        let at = from + i;
        let end = code[at..].find(")]").map_or(code.len(), |e| at + e);
        let cond = &code[at + 6..end];
        let names_test = cond.split(|c: char| !is_ident(c)).any(|w| w == "test");
        if names_test && !cond.contains("not(") {
            return Some(at);
        }
        from = at + 6;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Reads a file's module declarations, re-exports and references.
fn parse(module: &[String], text: &str) -> File {
    let code = clean(text);
    let mut children = BTreeSet::new();
    let words: Vec<&str> = code
        .split(|c: char| !(is_ident(c)))
        .filter(|w| !w.is_empty())
        .collect();
    for w in words.windows(2) {
        if w[0] == "mod" {
            children.insert(w[1].to_string());
        }
    }
    let mut file = File {
        module: module.to_vec(),
        children,
        reexports: HashMap::new(),
        refs: Vec::new(),
    };
    // `pub use` statements: record what each re-exported name stands for.
    for stmt in code.split(';') {
        let s = stmt.trim();
        let Some(at) = s.find("use ") else { continue };
        let head = &s[..at];
        if !head.trim_start().starts_with("pub") && !head.contains("pub") {
            continue;
        }
        if !head
            .trim()
            .chars()
            .all(|c| is_ident(c) || "()# []".contains(c))
        {
            continue;
        }
        for (path, alias) in expand(s[at + 4..].trim()) {
            // A name from another crate is re-exported as an empty path: it is nobody's here.
            let abs = file.absolute(&path).unwrap_or_default();
            if let Some(name) = alias.or_else(|| path.last().cloned()) {
                if name != "self" && name != "*" {
                    file.reexports.insert(name, abs);
                }
            }
        }
    }
    // Every path in the file, `use` lines included.
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    for (k, &(pos, c)) in chars.iter().enumerate() {
        if !is_ident(c) || (k > 0 && (is_ident(chars[k - 1].1) || chars[k - 1].1 == ':')) {
            continue;
        }
        // Not after `::`: a path's first segment.
        let rest = &code[pos..];
        let first: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let tail = &rest[first.len()..];
        if !tail.starts_with("::") {
            continue;
        }
        let starts = first == "crate"
            || first == "super"
            || first == "self"
            || file.children.contains(&first);
        if !starts {
            continue;
        }
        for (path, _) in expand(rest) {
            if let Some(abs) = file.absolute(&path) {
                file.refs.push(abs);
            }
        }
    }
    file
}

impl File {
    /// The absolute form of a path as written in this file.
    fn absolute(&self, path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        let mut abs: Vec<String>;
        let mut rest = path;
        if first == "crate" {
            abs = Vec::new();
            rest = &path[1..];
        } else if first == "super" || first == "self" {
            abs = self.module.clone();
            while let Some(s) = rest.first() {
                match s.as_str() {
                    "super" => {
                        abs.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
        } else if self.children.contains(first) {
            abs = self.module.clone();
        } else {
            return None;
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    }
}

/// The paths of a `use` tree or a path in code (`a::b::{c, d::e as f}`), each with its alias.
fn expand(text: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    expand_into(text, &[], &mut out);
    out
}

fn expand_into(text: &str, prefix: &[String], out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix.to_vec();
    let mut s = text.trim_start();
    loop {
        let seg: String = s
            .chars()
            .take_while(|c| is_ident(*c) || *c == '*')
            .collect();
        if seg.is_empty() {
            if let Some(inner) = s.strip_prefix('{') {
                for item in split_top(inner) {
                    expand_into(item, &path, out);
                }
                return;
            }
            break;
        }
        path.push(seg.clone());
        s = &s[seg.len()..];
        if let Some(r) = s.strip_prefix("::") {
            s = r.trim_start();
            continue;
        }
        break;
    }
    if path.len() > prefix.len() {
        let alias = s
            .trim_start()
            .strip_prefix("as ")
            .map(|a| a.trim().chars().take_while(|c| is_ident(*c)).collect());
        out.push((path, alias));
    }
}

/// The comma-separated items of a `{...}` group (its text after the `{`), to its closing brace.
fn split_top(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&inner[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
}

/// Groups of nodes that reach one another (strongly connected components of two or more).
fn cycles(
    nodes: &BTreeSet<String>,
    edges: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iterative.
    let index_of: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let names: Vec<&String> = nodes.iter().collect();
    let adj: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            edges
                .get(*n)
                .map(|ts| {
                    ts.iter()
                        .filter_map(|t| index_of.get(t.as_str()).copied())
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let n = names.len();
    let (mut index, mut low, mut on) = (vec![usize::MAX; n], vec![0; n], vec![false; n]);
    let (mut stack, mut next, mut out) = (Vec::new(), 0, Vec::new());
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            if *child == 0 && index[v] == usize::MAX {
                index[v] = next;
                low[v] = next;
                next += 1;
                stack.push(v);
                on[v] = true;
            }
            if let Some(&w) = adj[v].get(*child) {
                *child += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut comp = Vec::new();
                while let Some(w) = stack.pop() {
                    on[w] = false;
                    comp.push(names[w].clone());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    out.push(comp);
                }
            }
        }
    }
    out
}

/// Every cycle in `g`, among files and, at each folder, among its files and sub-folders; each
/// as lines naming the edges that close it. Empty when the crate is layered.
pub fn problems(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    let plain: BTreeMap<String, BTreeSet<String>> = g
        .edges
        .iter()
        .map(|(a, ts)| (a.clone(), ts.keys().cloned().collect()))
        .collect();
    for comp in cycles(&g.files, &plain) {
        out.push(describe("files", &comp, |a, b| {
            g.edges
                .get(a)
                .and_then(|t| t.get(b))
                .map(|s| s.iter().cloned().collect())
        }));
    }
    // Folder level: at each folder, its own file and each child (file or folder) is one unit.
    let mut folders: BTreeSet<String> = BTreeSet::new();
    for f in &g.files {
        let mut parts: Vec<&str> = f.split('/').collect();
        parts.pop();
        while !parts.is_empty() {
            folders.insert(parts.join("/"));
            parts.pop();
        }
    }
    folders.insert(String::new());
    for folder in folders {
        let unit = |file: &str| -> Option<String> {
            let rest = if folder.is_empty() {
                file
            } else {
                file.strip_prefix(&format!("{folder}/"))?
            };
            Some(match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            })
        };
        let mut units = BTreeSet::new();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut why: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for f in &g.files {
            if let Some(u) = unit(f) {
                units.insert(u);
            }
        }
        for (a, ts) in &g.edges {
            let Some(ua) = unit(a) else { continue };
            for b in ts.keys() {
                let Some(ub) = unit(b) else { continue };
                if ua != ub {
                    edges.entry(ua.clone()).or_default().insert(ub.clone());
                    why.entry((ua.clone(), ub.clone()))
                        .or_default()
                        .insert(format!("{a} -> {b}"));
                }
            }
        }
        for comp in cycles(&units, &edges) {
            if !comp.iter().any(|u| u.ends_with('/')) {
                continue; // among files only: reported above
            }
            let label = if folder.is_empty() {
                "folders at the root".to_string()
            } else {
                format!("folders in {folder}/")
            };
            out.push(describe(&label, &comp, |a, b| {
                why.get(&(a.to_string(), b.to_string()))
                    .map(|s| s.iter().cloned().collect())
            }));
        }
    }
    out
}

fn describe(
    what: &str,
    comp: &[String],
    why: impl Fn(&str, &str) -> Option<Vec<String>>,
) -> String {
    let mut s = format!("a cycle among {what}: {}", comp.join(", "));
    for a in comp {
        for b in comp {
            if let Some(names) = why(a, b) {
                s.push_str(&format!("\n    {a} -> {b}: {}", names.join(", ")));
            }
        }
    }
    s
}

/// The files bottom up: each imports only files listed before it (when there is no cycle).
pub fn order(g: &Graph) -> Vec<String> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut left: Vec<&String> = g.files.iter().collect();
    while !left.is_empty() {
        let (ready, wait): (Vec<&String>, Vec<&String>) = left.iter().partition(|f| {
            g.edges.get(**f).is_none_or(|ts| {
                ts.keys()
                    .all(|t| placed.contains(t) || !g.files.contains(t))
            })
        });
        if ready.is_empty() {
            out.extend(wait.iter().map(|f| format!("{f} (in a cycle)")));
            break;
        }
        for f in &ready {
            placed.insert((*f).clone());
            out.push((*f).clone());
        }
        left = wait;
    }
    out
}

/// `cargo xtask layers`: prints each crate's files bottom up and every cycle; fails on one.
pub fn run(root: &Path) -> Result<bool, String> {
    let mut ok = true;
    for krate in CRATES {
        let src = root.join(krate);
        if !src.is_dir() {
            continue; // an older checkout without this crate
        }
        let g = read(&src)?;
        println!("{krate}, bottom up:");
        for f in order(&g) {
            println!("  {f}");
        }
        for p in problems(&g) {
            ok = false;
            println!("{krate}: {p}");
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_crate_is_layered_without_a_cycle() {
        let mut all = Vec::new();
        for krate in CRATES {
            let g = read(&root().join(krate)).expect("readable");
            assert!(g.files.len() > 1 || *krate != "mqrs-runtime/src");
            all.extend(problems(&g).into_iter().map(|p| format!("{krate}: {p}")));
        }
        assert!(all.is_empty(), "{}", all.join("\n"));
    }

    #[test]
    fn the_reader_sees_a_cycle_through_use_lines_super_and_reexports() {
        let dir = std::env::temp_dir().join(format!("mqrs-layers-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("a")).expect("dir");
        fs::write(dir.join("lib.rs"), "mod a; mod b;").expect("write");
        fs::write(dir.join("a/mod.rs"), "mod x; mod y; pub use y::Y;").expect("write");
        // x uses Y through the door of a/mod.rs; y uses x back in code, not in a use line.
        fs::write(
            dir.join("a/x.rs"),
            "use super::Y; // crate::b::Nope\npub struct X;",
        )
        .expect("write");
        fs::write(
            dir.join("a/y.rs"),
            "pub struct Y; fn f() { let _ = super::x::X; }",
        )
        .expect("write");
        fs::write(
            dir.join("b.rs"),
            "use crate::a::{self, Y as Z};\n#[cfg(test)]\nmod tests { use crate::a::x; }\n\
             #[cfg(all(test, feature = \"f\"))]\nmod more { use crate::a::x; }\n\
             pub use std::sync::Arc;",
        )
        .expect("write");
        let g = read(&dir).expect("read");
        let p = problems(&g);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("a/x.rs -> a/y.rs: a::Y"), "{}", p[0]);
        assert!(p[0].contains("a/y.rs -> a/x.rs: a::x::X"), "{}", p[0]);
        assert_eq!(
            g.edges["b.rs"].keys().collect::<Vec<_>>(),
            ["a/mod.rs", "a/y.rs"],
            "a door, and a name followed through it; nothing from comments or tests"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}

//! `cargo xtask tidy`: repository invariants that cost seconds to check.
//!
//! - The crate graph: every `lopper-*` dependency of every crate (normal, dev and build, optional
//!   included) is one that docs/ARCHITECTURE.md's "Crate graph" list allows, and the graph is acyclic.
//! - No Rust or CUDA source file over `MAX_LINES` lines (no 3,000-line backend files).
//! - No `todo!()` / `unimplemented!()` in the crates.
//! - Every kernels/*.cu starts with a header comment.
//! - No benchmark data (DLMC `.smtx`) and no file over 2 MiB outside data/ tracked by git.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1200;

pub fn run() -> crate::Res {
    let root = crate::root();
    let mut problems = Vec::new();
    check_graph(&root, &mut problems)?;
    check_sources(&root, &mut problems);
    check_tracked(&root, &mut problems);
    if problems.is_empty() {
        eprintln!("xtask tidy: ok");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        Err(format!("{} problem(s)", problems.len()))
    }
}

/// Allowed edges from docs/ARCHITECTURE.md: lines `- lopper-x: lopper-y, lopper-z` (or `(none)`)
/// between `<!-- tidy:graph -->` and `<!-- /tidy:graph -->`.
fn allowed_graph(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let p = root.join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let start = text
        .find("<!-- tidy:graph -->")
        .ok_or("docs/ARCHITECTURE.md has no <!-- tidy:graph --> section")?;
    let end = text[start..]
        .find("<!-- /tidy:graph -->")
        .ok_or("docs/ARCHITECTURE.md: unterminated tidy:graph section")?;
    let mut g = BTreeMap::new();
    for line in text[start..start + end].lines() {
        let Some(rest) = line.trim().strip_prefix("- ") else {
            continue;
        };
        let Some((name, deps)) = rest.split_once(':') else {
            continue;
        };
        let deps = deps
            .split(',')
            .map(|d| d.trim().trim_matches('`').to_string())
            .filter(|d| d.starts_with("lopper"))
            .collect();
        g.insert(name.trim().trim_matches('`').to_string(), deps);
    }
    Ok(g)
}

/// `lopper-*` dependencies named in a Cargo.toml (any dependency table).
fn lopper_deps(manifest: &Path) -> Result<(String, BTreeSet<String>), String> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut name = String::new();
    let mut deps = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            section = l.trim_matches(['[', ']']).to_string();
            continue;
        }
        if section == "package"
            && let Some(v) = l.strip_prefix("name")
        {
            name = v
                .trim_start_matches([' ', '='])
                .trim_matches('"')
                .to_string();
        }
        if section.ends_with("dependencies") {
            let key = l.split(['=', '.', ' ']).next().unwrap_or("");
            if key.starts_with("lopper") {
                deps.insert(key.to_string());
            }
        }
    }
    Ok((name, deps))
}

fn check_graph(root: &Path, problems: &mut Vec<String>) -> crate::Res {
    let allowed = allowed_graph(root)?;
    let mut actual = BTreeMap::new();
    let crates = root.join("crates");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&crates)
        .map_err(|e| format!("{}: {e}", crates.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for d in dirs {
        let (name, deps) = lopper_deps(&d.join("Cargo.toml"))?;
        match allowed.get(&name) {
            None => problems.push(format!(
                "crate {name} is missing from docs/ARCHITECTURE.md's crate graph"
            )),
            Some(ok) => {
                for dep in deps.difference(ok) {
                    problems.push(format!(
                        "{name} depends on {dep}, which docs/ARCHITECTURE.md's crate graph does not allow"
                    ));
                }
            }
        }
        actual.insert(name, deps);
    }
    // cycle check (depth-first, colours)
    fn visit<'a>(
        n: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<String> {
        match state.get(n) {
            Some(1) => return Some(format!("dependency cycle: {} -> {n}", path.join(" -> "))),
            Some(2) => return None,
            _ => {}
        }
        state.insert(n, 1);
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, g, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(n, 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in actual.keys() {
        if let Some(c) = visit(n, &actual, &mut state, &mut Vec::new()) {
            problems.push(c);
            break;
        }
    }
    Ok(())
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "gpu-bundle" && name != "runs"
            {
                walk(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

fn check_sources(root: &Path, problems: &mut Vec<String>) {
    let mut files = Vec::new();
    for d in ["crates", "xtask", "kernels", "benches", "src"] {
        walk(&root.join(d), &mut files);
    }
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "rs" | "cu" | "cuh") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let rel = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        let n = text.lines().count();
        if n > MAX_LINES {
            problems.push(format!("{rel} has {n} lines (max {MAX_LINES}): split it"));
        }
        if ext == "rs" && !rel.starts_with("xtask/src/tidy.rs") {
            for (i, l) in text.lines().enumerate() {
                if l.contains(concat!("todo", "!(")) || l.contains(concat!("unimplemented", "!(")) {
                    problems.push(format!("{rel}:{}: stub macro left in the code", i + 1));
                }
            }
        }
        if ext == "cu"
            && !text.trim_start().starts_with("//")
            && !text.trim_start().starts_with("/*")
        {
            problems.push(format!("{rel}: a kernel file starts with a header comment (maths, shapes, buffers, variants, min SM)"));
        }
    }
}

fn check_tracked(root: &Path, problems: &mut Vec<String>) {
    let Ok(out) = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
    else {
        return; // not a git checkout: nothing to check
    };
    for f in out.stdout.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let f = String::from_utf8_lossy(f).to_string();
        if f.ends_with(".smtx") {
            problems.push(format!(
                "{f}: benchmark data is read from ../shared/dlmc, never committed"
            ));
        }
        if !f.starts_with("data/")
            && let Ok(m) = std::fs::metadata(root.join(&f))
            && m.len() > 2 << 20
        {
            problems.push(format!(
                "{f}: {} bytes; files over 2 MiB belong nowhere but data/",
                m.len()
            ));
        }
    }
}

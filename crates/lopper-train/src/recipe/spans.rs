//! Where keys are in a recipe's text: byte offsets to lines, key paths to the lines of their keys,
//! and the key path an error offset falls in.
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    /// A key in a table.
    Key(String),
    /// An element of an array (of tables).
    Index(usize),
}

/// A key path as written in messages: `train.steps`, `stage[2].sparsity`.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key a line of raw text assigns (`table.key` for `key = ...` under `[table]`), for errors
/// in text that does not parse: the key of the line holding byte `offset`, or of its table header.
pub fn key_from_text(text: &str, offset: usize) -> Option<String> {
    let end = offset.min(text.len());
    let start = text[..end].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    let header = |l: &str| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
    };
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    if let Some(h) = header(line) {
        return Some(h);
    }
    let key = line.split('=').next().map(str::trim).filter(|k| bare(k))?;
    let table = text[..start].lines().rev().find_map(header);
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The parsed document (spans only).
pub struct Spans<'a> {
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Spans<'a> {
    /// Parses `text` for spans (`None` inside when it does not parse: lookups then give line 1).
    pub fn new(text: &'a str) -> Self {
        Spans {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The line of the key at `path` (of the last key; an index alone gives its table's first
    /// line). Falls back to the deepest prefix that exists (e.g. a missing key: its table's line).
    pub fn line(&self, path: &[Seg]) -> usize {
        let Some(root) = &self.root else { return 1 };
        let mut table: &DeTable<'_> = root.get_ref();
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        let mut best: Option<Range<usize>> = None;
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    if let Some(v) = value {
                        match v.get_ref() {
                            DeValue::Table(t) => table = t,
                            _ => break,
                        }
                    }
                    let Some((key, v)) = table.iter().find(|(key, _)| key.get_ref() == k) else {
                        break;
                    };
                    best = Some(key.span());
                    value = Some(v);
                }
                Seg::Index(i) => {
                    let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) else {
                        break;
                    };
                    let Some(item) = a.get(*i) else { break };
                    best = Some(item.span());
                    value = Some(item);
                }
            }
        }
        best.map_or(1, |r| line_of(self.text, r.start))
    }

    /// The deepest key path whose key or value span holds byte `offset`.
    pub fn path_at(&self, offset: usize) -> Vec<Seg> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            walk_table(root.get_ref(), offset, &mut out);
        }
        out
    }
}

fn walk_table(t: &DeTable<'_>, offset: usize, out: &mut Vec<Seg>) {
    for (k, v) in t.iter() {
        if k.span().contains(&offset) {
            out.push(Seg::Key(k.get_ref().to_string()));
            return;
        }
        if v.span().contains(&offset) || value_holds(v.get_ref(), offset) {
            out.push(Seg::Key(k.get_ref().to_string()));
            walk_value(v.get_ref(), offset, out);
            return;
        }
    }
}

/// Whether a table or array holds `offset` in one of its children (a `[table]` or `[[array]]`
/// value's own span may not cover its keys).
fn value_holds(v: &DeValue<'_>, offset: usize) -> bool {
    match v {
        DeValue::Table(t) => t
            .iter()
            .any(|(k, v)| k.span().contains(&offset) || v.span().contains(&offset)),
        DeValue::Array(a) => a
            .iter()
            .any(|x| x.span().contains(&offset) || value_holds(x.get_ref(), offset)),
        _ => false,
    }
}

fn walk_value(v: &DeValue<'_>, offset: usize, out: &mut Vec<Seg>) {
    match v {
        DeValue::Table(t) => walk_table(t, offset, out),
        DeValue::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                if x.span().contains(&offset) || value_holds(x.get_ref(), offset) {
                    out.push(Seg::Index(i));
                    walk_value(x.get_ref(), offset, out);
                    return;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_paths() {
        let text = "name = \"x\"\n[train]\nsteps = 3\n\n[[stage]]\nkind = \"rigl\"\n[[stage]]\nkind = \"sparse24\"\nat = 5\n";
        let s = Spans::new(text);
        let k = |x: &str| Seg::Key(x.into());
        assert_eq!(s.line(&[k("name")]), 1);
        assert_eq!(s.line(&[k("train"), k("steps")]), 3);
        assert_eq!(s.line(&[k("stage"), Seg::Index(1), k("at")]), 9);
        assert_eq!(s.line(&[k("stage"), Seg::Index(0), k("kind")]), 6);
        // missing key: the deepest existing prefix
        assert_eq!(s.line(&[k("train"), k("nope")]), 2);
        let off = text.find("at = 5").unwrap();
        assert_eq!(
            s.path_at(off),
            vec![k("stage"), Seg::Index(1), k("at")],
            "{}",
            path_string(&s.path_at(off))
        );
        assert_eq!(path_string(&s.path_at(off)), "stage[1].at");
        let bad = "name = 1\n[train]\nsteps = = 3\n";
        let off = bad.find("= 3").unwrap();
        assert_eq!(key_from_text(bad, off).as_deref(), Some("train.steps"));
        assert_eq!(key_from_text("[[stage]\n", 3).as_deref(), Some("stage"));
        assert_eq!(key_from_text("\"x y\" = 1", 2), None);
    }
}

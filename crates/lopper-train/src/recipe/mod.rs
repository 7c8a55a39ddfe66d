//! Recipes: a training described in TOML (model, data, optimizer, schedule, train settings and
//! compression stages), parsed with unknown keys refused and every error pointing at its file,
//! key and line ([`Error::Recipe`]); built into a [`Trainer`](crate::Trainer) by
//! [`Recipe::build`]. The schema, with every key, type, default and meaning, is in
//! docs/recipes.md.
//!
//! ```toml
//! name = "gradual-80"
//! seed = 0
//! [model]
//! kind = "gpt"
//! ctx = 64
//! layers = 2
//! heads = 4
//! width = 128
//! [data]
//! kind = "text"            # the embedded KJV text unless `path` is given
//! batch = 8
//! [optimizer]
//! kind = "adamw"
//! lr = 3e-3
//! [schedule]
//! kind = "cosine"
//! warmup = 20
//! [train]
//! steps = 300
//! [[stage]]
//! kind = "gradual_magnitude"
//! sparsity = 0.8
//! start = 30
//! end = 200
//! every = 10
//! ```
#![warn(missing_docs)]
mod build;
pub mod spans;
pub mod spec;

pub use spec::{
    DataSpec, EndSpec, ModelSpec, OptimizerSpec, RecipeSpec, STAGE_KINDS, ScheduleSpec, StageSpec,
    TrainSpec,
};

use crate::{Error, Result, io};
use spans::{Spans, line_of, path_string};
use spec::Checker;
use std::path::Path;

/// A parsed and checked recipe.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    /// The recipe's content.
    pub spec: RecipeSpec,
    /// Where it came from (file path, or the name given to [`Recipe::from_str`]).
    pub source: String,
    /// The text it was parsed from (for error lines in [`Recipe::build`]).
    text: String,
}

/// The backticked name in a serde message (`unknown field `foo`, expected ...`).
fn backticked(msg: &str) -> Option<&str> {
    let a = msg.find('`')? + 1;
    let b = a + msg[a..].find('`')?;
    Some(&msg[a..b])
}

impl Recipe {
    /// Reads and parses the recipe at `path` (errors name the path).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Recipe> {
        let path = path.as_ref();
        // a folder or a FIFO is said as such (reading a FIFO would wait for a writer)
        if let Ok(m) = std::fs::metadata(path)
            && !m.is_file()
        {
            let what = if m.is_dir() {
                "is a folder, not a recipe file"
            } else {
                "is not a regular file"
            };
            return Err(io(path, std::io::Error::other(what)));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
        Recipe::from_str(&text, &path.display().to_string())
    }

    /// Parses and checks recipe `text`; `source` names it in errors (a path or a label).
    #[allow(clippy::should_implement_trait)] // takes the source name too
    pub fn from_str(text: &str, source: &str) -> Result<Recipe> {
        let spans = Spans::new(text);
        let spec: RecipeSpec = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |r| r.start);
            let mut path = spans.path_at(offset);
            let msg = e.message().trim().to_string();
            // a missing field's span is its table: name the field
            if msg.starts_with("missing field")
                && let Some(f) = backticked(&msg)
            {
                path.push(spans::Seg::Key(f.to_string()));
            }
            let key = if !path.is_empty() {
                path_string(&path)
            } else {
                // text that does not parse has no spans to walk: read the key off the line
                spans::key_from_text(text, offset).unwrap_or_else(|| "(document)".to_string())
            };
            Error::Recipe {
                path: source.to_string(),
                line: if e.span().is_some() {
                    line_of(text, offset)
                } else {
                    1
                },
                key,
                detail: msg,
            }
        })?;
        Checker {
            spans: &spans,
            file: source,
        }
        .check(&spec)?;
        Ok(Recipe {
            spec,
            source: source.to_string(),
            text: text.to_string(),
        })
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// A stable hash of the recipe's content (FNV-1a 64 of its canonical JSON form, as 16 hex
    /// digits): comments, key order and layout do not change it; any value does. Checkpoints
    /// record it so that a resume with another recipe is caught.
    pub fn hash(&self) -> String {
        let canonical = serde_json::to_string(&self.spec).unwrap_or_default();
        format!("{:016x}", crate::checkpoint::fnv1a64(canonical.as_bytes()))
    }

    /// An [`Error::Recipe`] at the line of `path` in this recipe's text.
    pub(crate) fn err(&self, path: &[spans::Seg], detail: impl Into<String>) -> Error {
        let spans = Spans::new(&self.text);
        Checker {
            spans: &spans,
            file: &self.source,
        }
        .err(path, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::fnv1a64;

    #[test]
    fn fnv_reference_values() {
        // FNV-1a 64 test vectors
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn backticks() {
        assert_eq!(backticked("unknown field `foo`, expected `a`"), Some("foo"));
        assert_eq!(backticked("nothing"), None);
    }
}

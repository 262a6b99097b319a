//! Diagnostics: every problem found in a file, pointing at `file:line:column` and the key.
//!
//! Validation never stops at the first error: it collects a [`Diagnostic`] per problem, so a
//! user fixes a file in one round trip, as with a compiler.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A file's text handed in by the caller (this crate reads nothing from disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Shown in diagnostics as given, and used to resolve relative `env_files`.
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        SourceFile {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// One problem: where it is, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
    /// Dotted path of the key (`resources.memory`, `ports[1]`); empty for a syntax error.
    pub key: String,
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at a byte offset of a text.
    pub fn at(file: &Path, text: &str, offset: usize, key: &str, message: String) -> Self {
        let (line, column) = line_column(text, offset);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            key: key.to_string(),
            message,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: ",
            self.file.display(),
            self.line,
            self.column
        )?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// 1-based line and column (in characters) of a byte offset; offsets past the end or inside a
/// character are clamped.
pub fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line as u32, column as u32)
}

/// Orders diagnostics as a reader meets them: by file, then position.
pub(crate) fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.key, &a.message)
            .cmp(&(&b.file, b.line, b.column, &b.key, &b.message))
    });
}

/// The closest of `candidates` to a misspelt `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_column(t, 0), (1, 1));
        assert_eq!(line_column(t, 4), (1, 5));
        assert_eq!(line_column(t, 6), (2, 1));
        // "é" is two bytes; the column counts characters.
        assert_eq!(line_column(t, 9), (2, 3));
        // Inside "é": clamped to its start.
        assert_eq!(line_column(t, 8), (2, 2));
        assert_eq!(line_column(t, 999), (3, 1));
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("memroy", &["memory", "cpus"]), Some("memory"));
        assert_eq!(did_you_mean("Image", &["image"]), Some("image"));
        assert_eq!(did_you_mean("zzz", &["memory", "cpus"]), None);
    }

    #[test]
    fn display_is_compiler_like() {
        let d = Diagnostic::at(
            Path::new("web.toml"),
            "x\ny = 1",
            2,
            "y",
            "unknown key".into(),
        );
        assert_eq!(d.to_string(), "web.toml:2:1: error: y: unknown key");
    }
}

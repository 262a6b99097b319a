//! Typed reading of a [`tree`](crate::tree) with every problem collected, not only the first.
//!
//! serde stops at the first error and loses spans inside enums, so the spec and the config are
//! read by hand through these helpers: each returns `None` after recording a diagnostic, and
//! the caller carries on with the next key.

use std::time::Duration;

use crate::diag::{Diagnostic, SourceFile, did_you_mean};
use crate::tree::{Kind, Node, Span, Table};

/// Collects diagnostics while reading one spec (base file plus drop-ins).
pub(crate) struct Cx<'f> {
    pub files: &'f [SourceFile],
    pub diags: Vec<Diagnostic>,
}

impl<'f> Cx<'f> {
    pub fn new(files: &'f [SourceFile]) -> Self {
        Cx {
            files,
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Span, key: &str, message: impl Into<String>) {
        let f = &self.files[span.file];
        self.diags.push(Diagnostic::at(
            &f.path,
            &f.text,
            span.start,
            key,
            message.into(),
        ));
    }

    fn expected(&mut self, n: &Node, key: &str, what: &str) {
        self.error(
            n.span,
            key,
            format!("expected {what}, found {}", n.kind.describe()),
        );
    }

    /// A table whose keys are all in `known`; unknown keys are reported (with a suggestion).
    pub fn table<'n>(&mut self, n: &'n Node, key: &str, known: &[&str]) -> Option<&'n Table> {
        let Kind::Table(t) = &n.kind else {
            self.expected(n, key, "a table");
            return None;
        };
        self.check_keys(t, key, known);
        Some(t)
    }

    pub fn check_keys(&mut self, t: &Table, key: &str, known: &[&str]) {
        for (k, e) in &t.entries {
            if !known.contains(&k.as_str()) {
                let hint = match did_you_mean(k, known) {
                    Some(s) => format!("unknown key (did you mean {s:?}?)"),
                    None => format!("unknown key (expected one of: {})", known.join(", ")),
                };
                self.error(e.key_span, &join(key, k), hint);
            }
        }
    }

    pub fn str<'n>(&mut self, n: &'n Node, key: &str) -> Option<&'n str> {
        match &n.kind {
            Kind::Str(s) => Some(s),
            _ => {
                self.expected(n, key, "a string");
                None
            }
        }
    }

    /// A string that is not empty and has no NUL (which no kernel interface accepts).
    pub fn text<'n>(&mut self, n: &'n Node, key: &str) -> Option<&'n str> {
        let s = self.str(n, key)?;
        if s.is_empty() {
            self.error(n.span, key, "must not be empty");
            return None;
        }
        if s.contains('\0') {
            self.error(n.span, key, "must not contain a NUL character");
            return None;
        }
        Some(s)
    }

    /// An argv item: empty is fine (`["redis-server", "--save", ""]`), NUL is not.
    fn argv_item<'n>(&mut self, n: &'n Node, key: &str) -> Option<&'n str> {
        let s = self.str(n, key)?;
        if s.contains('\0') {
            self.error(n.span, key, "must not contain a NUL character");
            return None;
        }
        Some(s)
    }

    pub fn bool(&mut self, n: &Node, key: &str) -> Option<bool> {
        match n.kind {
            Kind::Bool(b) => Some(b),
            _ => {
                self.expected(n, key, "true or false");
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&mut self, n: &Node, key: &str, min: i64, max: i64) -> Option<i64> {
        match &n.kind {
            Kind::Int(Ok(i)) if (min..=max).contains(i) => Some(*i),
            Kind::Int(Ok(i)) => {
                self.error(n.span, key, format!("{i} is out of range ({min} to {max})"));
                None
            }
            Kind::Int(Err(text)) => {
                self.error(n.span, key, format!("{text} is out of range"));
                None
            }
            _ => {
                self.expected(n, key, "an integer");
                None
            }
        }
    }

    /// An array of strings (empty strings allowed, as in an argv).
    pub fn strings(&mut self, n: &Node, key: &str) -> Option<Vec<String>> {
        let Kind::Array(items) = &n.kind else {
            self.expected(n, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.argv_item(item, &index(key, i)) {
                Some(s) => out.push(s.to_string()),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub fn array<'n>(&mut self, n: &'n Node, key: &str) -> Option<&'n [Node]> {
        match &n.kind {
            Kind::Array(items) => Some(items),
            _ => {
                self.expected(n, key, "an array");
                None
            }
        }
    }

    pub fn duration(&mut self, n: &Node, key: &str) -> Option<Duration> {
        let s = self.str(n, key)?;
        crate::units::parse_duration(s)
            .map_err(|e| self.error(n.span, key, e))
            .ok()
    }

    pub fn size(&mut self, n: &Node, key: &str) -> Option<u64> {
        match &n.kind {
            Kind::Int(Ok(i)) if *i >= 0 => Some(*i as u64),
            Kind::Str(s) => crate::units::parse_size(s)
                .map_err(|e| self.error(n.span, key, e))
                .ok(),
            _ => {
                self.expected(n, key, "a size such as \"256MiB\" or a byte count");
                None
            }
        }
    }

    /// One of a closed set of words; a near miss gets a suggestion.
    pub fn choice<T: Copy>(&mut self, n: &Node, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.str(n, key)?;
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let msg = match did_you_mean(s, &names) {
            Some(m) => format!("unknown value {s:?} (did you mean {m:?}?)"),
            None => format!(
                "unknown value {s:?} (expected one of: {})",
                names.join(", ")
            ),
        };
        self.error(n.span, key, msg);
        None
    }

    /// A table of string values (env, labels); integers, floats and booleans are written out as
    /// strings because users write `PORT = 8080`.
    pub fn string_map(
        &mut self,
        n: &Node,
        key: &str,
        check_key: impl Fn(&str) -> Result<(), String>,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let Kind::Table(t) = &n.kind else {
            self.expected(n, key, "a table of strings");
            return None;
        };
        let mut out = std::collections::BTreeMap::new();
        for (k, e) in &t.entries {
            let full = join(key, k);
            if let Err(why) = check_key(k) {
                self.error(e.key_span, &full, why);
                continue;
            }
            let v = match &e.value.kind {
                Kind::Str(s) if s.contains('\0') => {
                    self.error(e.value.span, &full, "must not contain a NUL character");
                    continue;
                }
                Kind::Str(s) => s.clone(),
                Kind::Int(Ok(i)) => i.to_string(),
                Kind::Float(f) if f.is_finite() => f.to_string(),
                Kind::Bool(b) => b.to_string(),
                _ => {
                    self.expected(&e.value, &full, "a string");
                    continue;
                }
            };
            out.insert(k.clone(), v);
        }
        Some(out)
    }
}

impl Table {
    pub fn get(&self, k: &str) -> Option<&Node> {
        self.entries.get(k).map(|e| &e.value)
    }
}

/// `parent.child`, or `child` at the top level.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// `key[i]`.
pub(crate) fn index(key: &str, i: usize) -> String {
    format!("{key}[{i}]")
}

//! A TOML document as a tree whose every key and value knows the file and byte range it came
//! from, so drop-ins can be merged over a base file and errors still point at the right place.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, SourceFile};

/// Where a key or value came from: a file (index into the caller's file list) and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub file: usize,
    pub start: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub span: Span,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Str(String),
    /// Out-of-range integers are kept as text so the error can say so.
    Int(Result<i64, String>),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Node>),
    Table(Table),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key_span: Span,
    pub value: Node,
}

impl Kind {
    /// How a user would call this kind of value in an error message.
    pub fn describe(&self) -> &'static str {
        match self {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime => "a date-time",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

/// Parses a document; syntax errors become diagnostics (with toml's recovery, several of them).
pub(crate) fn parse(files: &[SourceFile], file: usize) -> Result<Node, Vec<Diagnostic>> {
    let src = &files[file];
    let (doc, errors) = DeTable::parse_recoverable(&src.text);
    if !errors.is_empty() {
        let mut diags: Vec<Diagnostic> = errors
            .iter()
            .map(|e| {
                let offset = e.span().map_or(0, |r| r.start);
                let message = e.message().trim().trim_end_matches('.').to_string();
                Diagnostic::at(&src.path, &src.text, offset, "", message)
            })
            .collect();
        diags.dedup();
        return Err(diags);
    }
    let span = Span {
        file,
        start: doc.span().start,
    };
    Ok(Node {
        span,
        kind: Kind::Table(convert_table(doc.get_ref(), file)),
    })
}

fn convert_table(t: &DeTable<'_>, file: usize) -> Table {
    let entries = t
        .iter()
        .map(|(k, v)| {
            let key_span = Span {
                file,
                start: k.span().start,
            };
            let value = convert(v.get_ref(), v.span().start, file);
            (k.get_ref().to_string(), Entry { key_span, value })
        })
        .collect();
    Table { entries }
}

fn convert(v: &DeValue<'_>, start: usize, file: usize) -> Node {
    let kind = match v {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => Kind::Int(
            i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).map_err(|_| i.to_string()),
        ),
        DeValue::Float(f) => Kind::Float(f.as_str().replace('_', "").parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(_) => Kind::Datetime,
        DeValue::Array(a) => Kind::Array(
            a.iter()
                .map(|x| convert(x.get_ref(), x.span().start, file))
                .collect(),
        ),
        DeValue::Table(t) => Kind::Table(convert_table(t, file)),
    };
    Node {
        span: Span { file, start },
        kind,
    }
}

/// Merges a drop-in over a base, as systemd drop-ins do: tables merge key by key, anything
/// else (arrays included) is replaced whole.
pub(crate) fn merge(base: &mut Node, over: Node) {
    match (&mut base.kind, over.kind) {
        (Kind::Table(b), Kind::Table(o)) => {
            for (k, entry) in o.entries {
                match b.entries.get_mut(&k) {
                    Some(existing) => {
                        existing.key_span = entry.key_span;
                        merge(&mut existing.value, entry.value);
                    }
                    None => {
                        b.entries.insert(k, entry);
                    }
                }
            }
        }
        (_, kind) => {
            *base = Node {
                span: over.span,
                kind,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(texts: &[&str]) -> Vec<SourceFile> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| SourceFile::new(format!("f{i}.toml"), *t))
            .collect()
    }

    fn table(n: &Node) -> &Table {
        match &n.kind {
            Kind::Table(t) => t,
            _ => panic!("not a table"),
        }
    }

    #[test]
    fn merge_tables_by_key_and_replace_arrays() {
        let f = files(&[
            "image = \"a\"\nports = [\"1:1\", \"2:2\"]\n[resources]\nmemory = \"1g\"\npids = 5\n",
            "ports = [\"3:3\"]\n[resources]\nmemory = \"2g\"\n",
        ]);
        let mut base = parse(&f, 0).unwrap();
        merge(&mut base, parse(&f, 1).unwrap());
        let t = table(&base);
        let Kind::Array(ports) = &t.entries["ports"].value.kind else {
            panic!()
        };
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].span.file, 1);
        let res = table(&t.entries["resources"].value);
        assert_eq!(res.entries["memory"].value.span.file, 1);
        assert_eq!(res.entries["pids"].value.span.file, 0);
        assert_eq!(t.entries["image"].value.span.file, 0);
    }

    #[test]
    fn syntax_errors_are_positioned() {
        let f = files(&["image = \"a\"\nbad = \n"]);
        let d = parse(&f, 0).unwrap_err();
        assert_eq!(d[0].line, 2, "{d:?}");
    }

    #[test]
    fn integers_keep_radix_and_range() {
        let f = files(&["a = 0x10\nb = 1_000\nc = 99999999999999999999\n"]);
        let n = parse(&f, 0);
        // toml itself refuses integers past i64.
        if let Ok(n) = n {
            let t = table(&n);
            assert!(matches!(t.entries["a"].value.kind, Kind::Int(Ok(16))));
            assert!(matches!(t.entries["b"].value.kind, Kind::Int(Ok(1000))));
        }
        let f = files(&["a = 0x10\nb = 1_000\n"]);
        let n = parse(&f, 0).unwrap();
        let t = table(&n);
        assert!(matches!(t.entries["a"].value.kind, Kind::Int(Ok(16))));
        assert!(matches!(t.entries["b"].value.kind, Kind::Int(Ok(1000))));
    }
}

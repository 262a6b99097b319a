//! `env_files`: Docker's `--env-file` format. One `KEY=VALUE` a line, taken literally (no
//! quotes, no expansion); blank lines and lines starting with `#` are skipped.

use std::collections::BTreeMap;
use std::path::Path;

use crate::diag::Diagnostic;

/// Parses one env file's text; every bad line is reported.
pub fn parse_env_file(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, String>, Vec<Diagnostic>> {
    let mut vars = BTreeMap::new();
    let mut diags = Vec::new();
    let mut offset = 0;
    for raw in text.split_inclusive('\n') {
        let line_start = offset;
        offset += raw.len();
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = line_start + (line.len() - trimmed.len());
        let err = |key: &str, msg: String| Diagnostic::at(path, text, at, key, msg);
        match trimmed.split_once('=') {
            None => diags.push(err(
                trimmed,
                "expected KEY=VALUE (berth does not pass its own environment through)".into(),
            )),
            Some(("", _)) => diags.push(err("", "empty variable name".into())),
            Some((k, _)) if k.chars().any(char::is_whitespace) => {
                diags.push(err(k, "variable name contains whitespace".into()))
            }
            Some((_, v)) if v.contains('\0') => {
                diags.push(err(trimmed, "value contains a NUL character".into()))
            }
            Some((k, v)) => {
                vars.insert(k.to_string(), v.to_string());
            }
        }
    }
    if diags.is_empty() {
        Ok(vars)
    } else {
        Err(diags)
    }
}

/// Checks a variable name written in a spec's `env` table.
pub(crate) fn check_env_name(k: &str) -> Result<(), String> {
    if k.is_empty() || k.contains('=') || k.contains('\0') || k.chars().any(char::is_whitespace) {
        Err(format!(
            "invalid variable name {k:?}: no '=', whitespace or NUL, not empty"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let t = "# comment\n\nA=1\n  B=two words \nC=\nD=x=y\r\n";
        let v = parse_env_file(Path::new("x.env"), t).unwrap();
        assert_eq!(v["A"], "1");
        assert_eq!(v["B"], "two words ");
        assert_eq!(v["C"], "");
        assert_eq!(v["D"], "x=y");
    }

    #[test]
    fn errors_name_the_line() {
        let t = "A=1\nBARE\n=x\nA B=1\n";
        let d = parse_env_file(Path::new("x.env"), t).unwrap_err();
        let lines: Vec<u32> = d.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(
            d[0].to_string()
                .starts_with("x.env:2:1: error: BARE: expected KEY=VALUE")
        );
    }
}

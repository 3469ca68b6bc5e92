//! The one rule for names that become paths, cgroup leaves or keys: container names,
//! `--name`, provision step names and rule names are all checked here, before anything
//! is touched, so `../x`, `''` or a name with a control character never reaches a
//! `remove_dir_all` or a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest accepted name (a cgroup leaf, a directory, a hostname default).
pub const MAX_NAME: usize = 64;

/// A name that breaks the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name '{}': use 1-{MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or digit", escape_controls(.name))]
pub struct NameError {
    /// What the name is for ("container", "provision step", "rule").
    pub what: &'static str,
    /// The refused name, as given.
    pub name: String,
}

/// Checks `name` against the rule: 1-64 ASCII letters, digits, `-`, `_`, `.`; the first
/// one a letter or digit (so never `.`, `..`, a hidden file or an option).
pub fn check(what: &'static str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what,
            name: name.to_string(),
        })
    }
}

/// Text with control characters (and the escape character) shown as `\xNN`, `\n`,
/// `\t`: what a name or a file may contain must not drive the reader's terminal.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// C0 and C1 controls, DEL, and the Unicode bidirectional overrides.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["a", "sleeper-1a2b", "web.v2", "A_b", &"x".repeat(64)] {
            assert!(check("container", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../x",
            "a/b",
            ".hidden",
            "-rf",
            "_x",
            "a b",
            "tab\there",
            "esc\u{1b}[31m",
            "é",
            &"x".repeat(65),
        ] {
            let e = check("container", bad).unwrap_err();
            assert!(!e.to_string().contains('\u{1b}'), "{e}");
        }
    }

    #[test]
    fn controls_are_escaped() {
        assert_eq!(escape_controls("plain"), "plain");
        assert_eq!(escape_controls("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(escape_controls("\u{202e}x"), "\\u{202e}x");
    }
}

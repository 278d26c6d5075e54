//! All CLI output goes through here: data to stdout (a table, or JSON with
//! `--json`), messages for people to stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;

use serde::Serialize;

/// Writes a line of data to stdout; a closed pipe (`palisade … | head`) is not an error.
fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Prints a message for people (stderr).
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("{msg}");
}

/// Prints data: JSON, or a table with the given headers and rows.
pub fn data<T: Serialize>(json: bool, value: &T, headers: &[&str], rows: Vec<Vec<String>>) {
    if json {
        match serde_json::to_string_pretty(value) {
            Ok(s) => out(&s),
            Err(e) => eprintln!("error: cannot encode JSON: {e}"),
        }
        return;
    }
    table(headers, &rows);
}

/// Prints raw text to stdout (PEM, say).
pub fn raw(text: &str) {
    let _ = write!(std::io::stdout().lock(), "{text}");
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        out(s.trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// A progress line on stderr that rewrites itself.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    enabled: bool,
}

impl Progress {
    /// A progress line (shown only when stderr is a terminal).
    pub fn new(label: &'static str) -> Self {
        use std::io::IsTerminal;
        Self {
            label,
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Shows `done` of `total`.
    pub fn set(&self, done: u64, total: u64) {
        if self.enabled {
            let pct = (done * 100).checked_div(total).unwrap_or(100);
            eprint!("\r{}: {done}/{total} ({pct}%)   ", self.label);
        }
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}

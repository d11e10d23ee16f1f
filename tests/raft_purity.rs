//! The Raft core (`src/raft`) must stay a pure, synchronous state machine:
//! no async runtime, no network, no storage engine, no protobuf, no clock,
//! no randomness, no threads, no file system, no environment. Everything
//! reaches it through `tick`/`step`/`propose`/... and leaves it through
//! `Ready`, so the simulator can drive it deterministically.
//!
//! This test reads every `.rs` file under `src/raft` (recursively) and fails,
//! listing `file:line`, for any code (not comments, not string literals) that
//! references one of:
//!
//! - the crates `tokio`, `tonic`, `rocksdb`, `prost`, `rand` (also `tokio_*::`,
//!   `prost_*::`, ... paths);
//! - `std::time`, `std::fs`, `std::net`, `std::thread`, `std::env` (also
//!   inside grouped imports such as `use std::{collections::HashMap, time};`);
//! - `SystemTime`, `Instant`;
//! - `async` (async fn or block) and `.await`.
//!
//! It also fails if `src/raft` holds no `.rs` file, so it cannot pass vacuously.

use std::fs;
use std::path::{Path, PathBuf};

/// Crates the Raft core must not use.
const FORBIDDEN_CRATES: &[&str] = &["tokio", "tonic", "rocksdb", "prost", "rand"];
/// `std` modules the Raft core must not use.
const FORBIDDEN_STD_MODULES: &[&str] = &["time", "fs", "net", "thread", "env"];
/// Identifiers the Raft core must not mention.
const FORBIDDEN_IDENTS: &[&str] = &["SystemTime", "Instant"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// 1-based line number.
    line: usize,
}

/// Splits Rust source into identifiers and punctuation, dropping whitespace,
/// comments (line, block, nested block, doc), string/char literals (including
/// raw and byte strings), lifetimes and number literals.
fn tokenize(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let n = chars.len();
    let mut out = Vec::new();
    let mut line = 1usize;
    let mut i = 0usize;

    // Skips a quoted literal starting at the opening `"` at `i`; returns the
    // index just after the closing quote.
    fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
        i += 1; // opening quote
        while i < chars.len() {
            match chars[i] {
                '\\' => {
                    if chars.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 2;
                }
                '"' => return i + 1,
                c => {
                    if c == '\n' {
                        *line += 1;
                    }
                    i += 1;
                }
            }
        }
        i
    }

    // Skips a raw string whose `#`s start at `i` (`r` prefix already consumed).
    fn skip_raw_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
        let mut hashes = 0;
        while chars.get(i) == Some(&'#') {
            hashes += 1;
            i += 1;
        }
        i += 1; // opening quote
        while i < chars.len() {
            if chars[i] == '\n' {
                *line += 1;
            }
            if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                return i + 1 + hashes;
            }
            i += 1;
        }
        i
    }

    fn is_ident_start(c: char) -> bool {
        c == '_' || c.is_alphabetic()
    }
    fn is_ident_continue(c: char) -> bool {
        c == '_' || c.is_alphanumeric()
    }

    while i < n {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < n && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 1;
            i += 2;
            while i < n && depth > 0 {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i, &mut line);
        } else if c == '\'' {
            // Char literal ('a', '\n', '\u{1F600}') or lifetime/label ('a, 'static).
            if next == Some('\\') {
                i += 3; // quote, backslash, escaped char
                while i < n && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < n && is_ident_continue(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() {
            while i < n && is_ident_continue(chars[i]) {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < n && is_ident_continue(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let after = chars.get(i).copied();
            match (word.as_str(), after) {
                ("r" | "br" | "cr", Some('"')) => i = skip_raw_string(&chars, i, &mut line),
                ("r" | "br" | "cr", Some('#')) if chars[i..].iter().skip_while(|&&h| h == '#').next() == Some(&'"') => {
                    i = skip_raw_string(&chars, i, &mut line)
                }
                ("r", Some('#')) => {
                    // Raw identifier: r#name.
                    let s = i + 1;
                    i = s;
                    while i < n && is_ident_continue(chars[i]) {
                        i += 1;
                    }
                    let name: String = chars[s..i].iter().collect();
                    out.push(Token { tok: Tok::Ident(name), line });
                }
                ("b" | "c", Some('"')) => i = skip_string(&chars, i, &mut line),
                ("b", Some('\'')) => {
                    // Byte literal b'x' or b'\n': skip the quote and the
                    // (possibly escaped) char, then up to the closing quote.
                    i += if chars.get(i + 1) == Some(&'\\') { 3 } else { 2 };
                    while i < n && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                _ => out.push(Token { tok: Tok::Ident(word), line }),
            }
        } else if c == ':' && next == Some(':') {
            out.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else {
            out.push(Token { tok: Tok::Punct(c), line });
            i += 1;
        }
    }
    out
}

/// A forbidden reference: 1-based line and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Violation {
    line: usize,
    what: String,
}

/// Finds every forbidden reference in one file's source.
fn scan(src: &str) -> Vec<Violation> {
    let toks = tokenize(src);
    let mut found = Vec::new();
    let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Tok| toks.get(i).map(|x| &x.tok) == Some(t);

    for (i, t) in toks.iter().enumerate() {
        match &t.tok {
            Tok::Ident(name) => {
                let name = name.as_str();
                // Crates: exact name anywhere, or `crate_suffix::` paths and
                // `use`/`extern crate` of `crate_suffix`.
                for &krate in FORBIDDEN_CRATES {
                    let prefixed = name.strip_prefix(krate).is_some_and(|rest| rest.starts_with('_'))
                        && (is(i + 1, &Tok::PathSep)
                            || matches!(i.checked_sub(1).and_then(ident), Some("use" | "crate")));
                    if name == krate || prefixed {
                        found.push(Violation { line: t.line, what: name.to_string() });
                    }
                }
                if FORBIDDEN_IDENTS.contains(&name) {
                    found.push(Violation { line: t.line, what: name.to_string() });
                }
                if name == "async" {
                    let what = if ident(i + 1) == Some("fn") { "async fn" } else { "async" };
                    found.push(Violation { line: t.line, what: what.to_string() });
                }
                if name == "await" && i > 0 && is(i - 1, &Tok::Punct('.')) {
                    found.push(Violation { line: t.line, what: ".await".to_string() });
                }
                if name == "std" && is(i + 1, &Tok::PathSep) {
                    if let Some(m) = ident(i + 2) {
                        if FORBIDDEN_STD_MODULES.contains(&m) {
                            found.push(Violation { line: t.line, what: format!("std::{m}") });
                        }
                    } else if is(i + 2, &Tok::Punct('{')) {
                        // Grouped import: look at the first segment of each
                        // top-level item of the group.
                        let mut depth = 0usize;
                        let mut j = i + 2;
                        while j < toks.len() {
                            match &toks[j].tok {
                                Tok::Punct('{') => depth += 1,
                                Tok::Punct('}') => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                Tok::Ident(m)
                                    if depth == 1
                                        && FORBIDDEN_STD_MODULES.contains(&m.as_str())
                                        && (is(j - 1, &Tok::Punct('{')) || is(j - 1, &Tok::Punct(','))) =>
                                {
                                    found.push(Violation { line: toks[j].line, what: format!("std::{m}") });
                                }
                                _ => {}
                            }
                            j += 1;
                        }
                    }
                }
            }
            Tok::PathSep | Tok::Punct(_) => {}
        }
    }
    found.sort_by(|a, b| (a.line, &a.what).cmp(&(b.line, &b.what)));
    found.dedup();
    found
}

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot read {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn raft_core_is_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raft_dir = root.join("src").join("raft");
    assert!(raft_dir.is_dir(), "{} does not exist: nothing to check", raft_dir.display());
    let files = rust_files(&raft_dir);
    assert!(!files.is_empty(), "{} holds no .rs files: nothing to check", raft_dir.display());

    let mut report = Vec::new();
    for file in &files {
        let src = fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let lines: Vec<&str> = src.lines().collect();
        let rel = file.strip_prefix(root).unwrap_or(file);
        for v in scan(&src) {
            let text = lines.get(v.line - 1).map_or("", |l| l.trim());
            report.push(format!("{}:{}: `{}` in: {}", rel.display(), v.line, v.what, text));
        }
    }
    assert!(
        report.is_empty(),
        "src/raft must stay pure (no tokio, tonic, rocksdb, prost, rand, std::time/fs/net/thread/env, \
         SystemTime, Instant, async, .await); found {}:\n{}",
        report.len(),
        report.join("\n")
    );
}

// The scanner itself, so a bug in it cannot silently let everything through.

fn whats(src: &str) -> Vec<(usize, String)> {
    scan(src).into_iter().map(|v| (v.line, v.what)).collect()
}

#[test]
fn scanner_flags_forbidden_references() {
    let src = r#"use tokio::time;
use std::time::Duration;
use std::{collections::HashMap, fs};
use std::{
    sync::Arc,
    thread,
};
fn f() { let t = std::time::Instant::now(); }
async fn g() { h().await; }
use rand::Rng;
use prost::Message;
use tonic_prost::ProstCodec;
extern crate rocksdb;
let s = SystemTime::now();
let x = ::std::env::var("X");
use std::net::TcpStream;
let b = async move { 1 };
"#;
    assert_eq!(
        whats(src),
        vec![
            (1, "tokio".to_string()),
            (2, "std::time".to_string()),
            (3, "std::fs".to_string()),
            (6, "std::thread".to_string()),
            (8, "Instant".to_string()),
            (8, "std::time".to_string()),
            (9, ".await".to_string()),
            (9, "async fn".to_string()),
            (10, "rand".to_string()),
            (11, "prost".to_string()),
            (12, "tonic_prost".to_string()),
            (13, "rocksdb".to_string()),
            (14, "SystemTime".to_string()),
            (15, "std::env".to_string()),
            (16, "std::net".to_string()),
            (17, "async".to_string()),
        ]
    );
}

#[test]
fn scanner_ignores_comments_strings_and_lookalikes() {
    let src = r####"// use tokio::time;
//! Instant replies are not a clock.
/// Doc: std::time is forbidden.
/* block: rand
   /* nested: tonic */ still a comment: prost */
let s = "tokio std::time Instant .await";
let r = r#"rocksdb "quoted" std::fs"#;
let b = b"rand";
let c = '"'; let d = '\''; let e = b'"';
fn lt<'a>(x: &'a str) -> &'a str { x }
let operand = brand + random_value + prosthetic + tokio_like_local;
use std::collections::HashMap;
use std::{sync::Arc, fmt};
let timeout = self.time + instant;
"####;
    assert_eq!(whats(src), Vec::<(usize, String)>::new());
}

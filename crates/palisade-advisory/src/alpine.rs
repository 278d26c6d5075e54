//! Alpine's version order, as `apk` compares package versions
//! (`1.2.3a_rc1_p2-r4`): numeric components, where a component after the
//! first that starts with `0` compares as a fraction (`1.02 < 1.1`); one
//! letter; suffixes, `_alpha < _beta < _pre < _rc` before the bare version and
//! `_cvs < _svn < _git < _hg < _p` after it, each with an optional number; the
//! package revision `-rN`. Written here: no maintained Rust crate implements
//! it (the tests hold it to pairs `apk version -t` gives).

use std::cmp::Ordering;

const PRE: [&str; 4] = ["alpha", "beta", "pre", "rc"];
const POST: [&str; 5] = ["cvs", "svn", "git", "hg", "p"];

/// What comes next in the version (the order matters: a version that ends,
/// or goes on with a later kind of token, sorts lower; see [`compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Token {
    DigitOrZero,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    RevisionNo,
    End,
    Invalid,
}

struct Cursor<'a> {
    s: &'a [u8],
    kind: Token,
    /// The last token was a run of leading zeros (the digits after it may
    /// be none: `1.0`).
    zeros: bool,
}

impl Cursor<'_> {
    /// Moves past a separator and says what the next token is.
    fn next_kind(&mut self) {
        let prev = self.kind;
        let mut n = Token::Invalid;
        match self.s.first() {
            None | Some(0) => n = Token::End,
            Some(c)
                if matches!(prev, Token::Digit | Token::DigitOrZero) && c.is_ascii_lowercase() =>
            {
                n = Token::Letter;
            }
            Some(c) if prev == Token::Letter && c.is_ascii_digit() => n = Token::Digit,
            Some(c) if prev == Token::Suffix && c.is_ascii_digit() => n = Token::SuffixNo,
            Some(c) => {
                match c {
                    b'.' => n = Token::DigitOrZero,
                    b'_' => n = Token::Suffix,
                    b'-' if self.s.get(1) == Some(&b'r') => {
                        n = Token::RevisionNo;
                        self.s = &self.s[1..];
                    }
                    _ => {}
                }
                self.s = &self.s[1..];
            }
        }
        // Tokens only move forward, with three exceptions.
        if n < prev
            && !((n == Token::DigitOrZero && prev == Token::Digit)
                || (n == Token::Suffix && prev == Token::SuffixNo)
                || (n == Token::Digit && prev == Token::Letter))
        {
            n = Token::Invalid;
        }
        self.kind = n;
    }

    /// Reads the current token's value and moves on.
    fn value(&mut self) -> i64 {
        if self.s.is_empty() {
            // A separator with nothing after it (`1.`, `1_`, `1-r`).
            self.kind = Token::Invalid;
            return -1;
        }
        let mut i = 0;
        let mut v: i64 = 0;
        let mut then = None;
        let zeros = std::mem::take(&mut self.zeros);
        self.zeros = false;
        match self.kind {
            Token::DigitOrZero if self.s[0] == b'0' => {
                // Leading zeros: a fraction, worth less the more zeros.
                while i < self.s.len() && self.s[i] == b'0' {
                    i += 1;
                }
                v = -(i as i64);
                then = Some(Token::Digit);
                self.zeros = true;
            }
            Token::DigitOrZero | Token::Digit | Token::SuffixNo | Token::RevisionNo => {
                while i < self.s.len() && self.s[i].is_ascii_digit() && i < 18 {
                    v = v * 10 + i64::from(self.s[i] - b'0');
                    i += 1;
                }
                if (i < self.s.len() && self.s[i].is_ascii_digit()) || (i == 0 && !zeros) {
                    // More digits than fit, or none where one is needed.
                    self.kind = Token::Invalid;
                    return -1;
                }
            }
            Token::Letter => {
                v = i64::from(self.s[0]);
                i = 1;
            }
            Token::Suffix => {
                if let Some(k) = PRE.iter().position(|p| self.s.starts_with(p.as_bytes())) {
                    i = PRE[k].len();
                    v = k as i64 - PRE.len() as i64;
                } else if let Some(k) = POST.iter().position(|p| self.s.starts_with(p.as_bytes())) {
                    i = POST[k].len();
                    v = k as i64;
                } else {
                    self.kind = Token::Invalid;
                    return -1;
                }
                then = Some(Token::SuffixNo);
            }
            Token::End | Token::Invalid => {
                self.kind = Token::Invalid;
                return -1;
            }
        }
        self.s = &self.s[i..];
        if self.s.is_empty() {
            self.kind = Token::End;
        } else if let Some(t) = then {
            self.kind = t;
            if t == Token::SuffixNo && !self.s[0].is_ascii_digit() {
                // A suffix without a number: what follows is a separator.
                self.kind = Token::Suffix;
                self.next_kind();
            }
        } else {
            self.next_kind();
        }
        v
    }
}

/// Whether `v` is a version `apk` accepts.
pub fn valid(v: &str) -> bool {
    let mut c = Cursor {
        s: v.as_bytes(),
        kind: Token::Digit,
        zeros: false,
    };
    if v.is_empty() || !v.as_bytes()[0].is_ascii_digit() {
        return false;
    }
    while c.kind != Token::End {
        c.value();
        if c.kind == Token::Invalid {
            return false;
        }
    }
    true
}

/// Compares two versions as `apk version -t` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let mut x = Cursor {
        s: a.as_bytes(),
        kind: Token::Digit,
        zeros: false,
    };
    let mut y = Cursor {
        s: b.as_bytes(),
        kind: Token::Digit,
        zeros: false,
    };
    let (mut av, mut bv) = (0, 0);
    while x.kind == y.kind && x.kind != Token::End && x.kind != Token::Invalid && av == bv {
        av = x.value();
        bv = y.value();
    }
    match av.cmp(&bv) {
        Ordering::Equal => {}
        o => return o,
    }
    if x.kind == y.kind {
        return Ordering::Equal;
    }
    // The leading components agree; the kind of what follows decides: a
    // pre-release suffix sorts before the end, anything else after it.
    let pre = |c: &Cursor<'_>| {
        c.kind == Token::Suffix && PRE.iter().any(|p| c.s.starts_with(p.as_bytes()))
    };
    if pre(&x) {
        return Ordering::Less;
    }
    if pre(&y) {
        return Ordering::Greater;
    }
    y.kind.cmp(&x.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_as_apk_does() {
        for (a, o, b) in [
            ("1.0", Ordering::Less, "1.0.1"),
            ("1.1_alpha1", Ordering::Less, "1.1"),
            ("1.1", Ordering::Less, "1.1_p1"),
            ("1.3_alpha", Ordering::Less, "1.3_alpha2"),
            ("0.8_beta1", Ordering::Less, "0.8_beta2"),
            ("1.0_rc1", Ordering::Greater, "1.0_beta9"),
            ("1.02", Ordering::Less, "1.1"),
            ("1.06-r6", Ordering::Less, "006"),
            ("1.0.4-r3", Ordering::Less, "1.0.4-r4"),
            ("2.3.0b-r1", Ordering::Less, "2.3.0b-r2"),
            ("1.2.2-r1", Ordering::Greater, "1.2.2"),
            ("1.0_p10-r0", Ordering::Greater, "1.0_p9-r0"),
            ("0.1.0_alpha_pre2", Ordering::Less, "0.1.0_alpha"),
            ("3.0.20060720", Ordering::Less, "20060720"),
            ("1.7", Ordering::Less, "1.7b"),
            ("4.5_p1", Ordering::Less, "4.5_p1-r1"),
            ("3.1.4-r0", Ordering::Less, "3.1.4-r1"),
            ("3.1.4-r5", Ordering::Less, "3.1.5-r0"),
            ("2.0.6", Ordering::Equal, "2.0.6"),
        ] {
            assert_eq!(compare(a, b), o, "{a} {o:?} {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn refuses_what_apk_refuses() {
        for ok in [
            "1",
            "1.2.3",
            "1.2.3a",
            "1.2_rc1-r3",
            "1.0_p",
            "20230101-r0",
            "1.0_alpha_pre2",
        ] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "", "a1", "1.0-x", "1.0_foo", "1..", "1.0-r", "1.0-r1.2", "1.0ab",
        ] {
            assert!(!valid(bad), "{bad}");
        }
    }
}

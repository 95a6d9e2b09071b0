//! The one glob matcher of cgqos, for rules (process and thread names) and the daemon's
//! policy (group names). Texts are hostile (a process picks its own argv[0] and thread
//! names; a caller picks the group it names), so matching must never backtrack: a pattern is
//! compiled to a bit-parallel NFA (one bit per pattern position) and the text is read once,
//! left to right. Time is O(text × ⌈pattern / 64⌉) whatever the pattern's stars; memory is
//! fixed at compile time.
//!
//! Syntax: `*` matches any run of characters (in [`Mode::Path`] not `/`), `?` any one
//! character (in [`Mode::Path`] it is literal, as the policy has always read it); every other
//! character, `[` and `\` included, stands for itself.

/// Longest rule pattern accepted ([`Wildcard::bounded`]), in characters: far beyond any real
/// name, and it bounds the per-character cost of matching (one machine word per 64
/// characters of pattern).
pub const MAX_PATTERN: usize = 1024;

/// How a pattern reads its wildcards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// fnmatch without flags, as schedqos matches names: `*` and `?` match anything, `/`
    /// included.
    Name,
    /// Paths of groups: `*` stops at `/`; `?` is an ordinary character.
    Path,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern of {len} characters is longer than the limit of {max}")]
pub struct TooLong {
    pub len: usize,
    pub max: usize,
}

/// A compiled glob. States are pattern positions 0..=n (position `j`: the first `j` tokens
/// matched); bit `j` of the state set is state `j`.
#[derive(Debug, Clone)]
pub struct Wildcard {
    mode: Mode,
    /// Words per state set.
    words: usize,
    /// Positions whose token is `*` (the state loops on any allowed character).
    stars: Vec<u64>,
    /// Positions whose token matches any character (`?` in name mode).
    any: Vec<u64>,
    /// For each ASCII character `c`, at `c * words`, the positions whose token is that
    /// character, `any` included.
    ascii: Vec<u64>,
    /// The same for other characters that occur in the pattern, sorted by character.
    other: Vec<(char, Vec<u64>)>,
    /// The start set (position 0 and the positions reachable from it through stars).
    start: Vec<u64>,
    /// The accepting position.
    accept: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Star,
    Any,
    Char(char),
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl Wildcard {
    /// Compiles `pattern`, refusing one longer than [`MAX_PATTERN`] characters.
    pub fn bounded(pattern: &str, mode: Mode) -> Result<Wildcard, TooLong> {
        let len = pattern.chars().count();
        if len > MAX_PATTERN {
            return Err(TooLong {
                len,
                max: MAX_PATTERN,
            });
        }
        Ok(Wildcard::new(pattern, mode))
    }

    /// Compiles `pattern`, whatever its length (matching costs one word per 64 characters).
    pub fn new(pattern: &str, mode: Mode) -> Wildcard {
        let mut tokens: Vec<Token> = Vec::new();
        for c in pattern.chars() {
            let t = match c {
                '*' => Token::Star,
                '?' if mode == Mode::Name => Token::Any,
                c => Token::Char(c),
            };
            // `**` is `*`: collapsing runs keeps the star closure a single shift.
            if t == Token::Star && tokens.last() == Some(&Token::Star) {
                continue;
            }
            tokens.push(t);
        }
        let states = tokens.len() + 1;
        let words = states.div_ceil(64);
        let zero = vec![0u64; words];
        let mut stars = zero.clone();
        let mut any = zero.clone();
        for (j, t) in tokens.iter().enumerate() {
            match t {
                Token::Star => set(&mut stars, j),
                Token::Any => set(&mut any, j),
                Token::Char(_) => {}
            }
        }
        let mut ascii: Vec<u64> = any.repeat(128);
        let mut other: Vec<(char, Vec<u64>)> = Vec::new();
        for (j, t) in tokens.iter().enumerate() {
            if let Token::Char(c) = *t {
                if c.is_ascii() {
                    set(&mut ascii[c as usize * words..(c as usize + 1) * words], j);
                } else {
                    match other.binary_search_by_key(&c, |(k, _)| *k) {
                        Ok(i) => set(&mut other[i].1, j),
                        Err(i) => {
                            let mut bits = any.clone();
                            set(&mut bits, j);
                            other.insert(i, (c, bits));
                        }
                    }
                }
            }
        }
        let mut w = Wildcard {
            mode,
            words,
            stars,
            any,
            ascii,
            other,
            start: zero,
            accept: tokens.len(),
        };
        let mut start = vec![0u64; words];
        set(&mut start, 0);
        w.close(&mut start);
        w.start = start;
        w
    }

    /// Adds the positions reachable without reading: past a star (runs are collapsed, so
    /// one step reaches them all).
    fn close(&self, d: &mut [u64]) {
        let mut carry = 0u64;
        for (i, word) in d.iter_mut().enumerate() {
            let s = *word & self.stars[i];
            let next = (s << 1) | carry;
            carry = s >> 63;
            *word |= next;
        }
    }

    fn mask(&self, c: char) -> &[u64] {
        if c.is_ascii() {
            &self.ascii[c as usize * self.words..(c as usize + 1) * self.words]
        } else {
            match self.other.binary_search_by_key(&c, |(k, _)| *k) {
                Ok(i) => &self.other[i].1,
                Err(_) => &self.any,
            }
        }
    }

    /// Whether the whole of `text` matches. Reads `text` once.
    pub fn matches(&self, text: &str) -> bool {
        if self.words == 1 {
            return self.matches_short(text);
        }
        let mut d = self.start.clone();
        let mut next = vec![0u64; self.words];
        for c in text.chars() {
            let mask = self.mask(c);
            let star_ok = !(self.mode == Mode::Path && c == '/');
            let mut carry = 0u64;
            let mut alive = 0u64;
            for i in 0..self.words {
                // Advance past a token that matches `c`...
                let adv = d[i] & mask[i];
                let mut w = (adv << 1) | carry;
                carry = adv >> 63;
                // ...or stay on a star that may consume it.
                if star_ok {
                    w |= d[i] & self.stars[i];
                }
                next[i] = w;
                alive |= w;
            }
            if alive == 0 {
                return false;
            }
            self.close(&mut next);
            std::mem::swap(&mut d, &mut next);
        }
        get(&d, self.accept)
    }
}

impl Wildcard {
    /// `matches` for patterns of up to 63 tokens (nearly all): one word, no allocation.
    fn matches_short(&self, text: &str) -> bool {
        let (stars, mut d) = (self.stars[0], self.start[0]);
        for c in text.chars() {
            let adv = (d & self.mask(c)[0]) << 1;
            let stay = if self.mode == Mode::Path && c == '/' {
                0
            } else {
                d & stars
            };
            d = adv | stay;
            if d == 0 {
                return false;
            }
            d |= (d & stars) << 1;
        }
        get(&[d], self.accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn name(p: &str, t: &str) -> bool {
        Wildcard::new(p, Mode::Name).matches(t)
    }

    fn path(p: &str, t: &str) -> bool {
        Wildcard::new(p, Mode::Path).matches(t)
    }

    /// The reference: the obvious backtracking matcher (fine on small inputs).
    fn slow(p: &[char], t: &[char], mode: Mode) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => {
                let may_eat = t.first().is_some_and(|&c| mode == Mode::Name || c != '/');
                slow(&p[1..], t, mode) || (may_eat && slow(p, &t[1..], mode))
            }
            (Some('?'), Some(_)) if mode == Mode::Name => slow(&p[1..], &t[1..], mode),
            (Some(a), Some(b)) if a == b => slow(&p[1..], &t[1..], mode),
            _ => false,
        }
    }

    #[test]
    fn names_like_fnmatch() {
        assert!(name("chrome", "chrome"));
        assert!(!name("chrome", "chromium"));
        assert!(!name("chrome", "chrom"));
        assert!(name("chrom*", "chromium"));
        assert!(name("Thread?ool*", "ThreadPoolForeg"));
        assert!(name("*", ""));
        assert!(name("", ""));
        assert!(!name("", "x"));
        assert!(!name("a?", "a"));
        assert!(name("*/chrome", "/opt/google/chrome/chrome"));
        assert!(name("a*b*c", "a/x/b/y/c"));
        // `[` is literal, as it always was in cgqos rules.
        assert!(name("[ab]", "[ab]"));
        assert!(!name("[ab]", "a"));
        // `?` is one character, not one byte.
        assert!(name("caf?", "café"));
        assert!(name("é*ü", "éxxü"));
        assert!(!name("é*ü", "éxxu"));
        assert!(name("**a***", "xxaxx"));
    }

    #[test]
    fn paths_stop_at_slashes() {
        assert!(path("vms/*", "vms/arcvm"));
        assert!(!path("vms/*", "vms/arcvm/vcpu"));
        assert!(path("vms/*/vcpu", "vms/arcvm/vcpu"));
        assert!(!path("chrome/*", "vms/x"));
        assert!(path("*", "chrome"));
        assert!(!path("*", "chrome/ui"));
        assert!(path("vms/a?", "vms/a?"));
        assert!(!path("vms/a?", "vms/ab"));
    }

    #[test]
    fn agrees_with_the_backtracking_reference() {
        // Every pattern over {a, b, /, *, ?} up to 4 tokens against every text over
        // {a, b, /} up to 5 characters.
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                let mut next = Vec::new();
                for s in &last {
                    for c in alphabet {
                        next.push(format!("{s}{c}"));
                    }
                }
                out.extend(next.iter().cloned());
                last = next;
            }
            out
        }
        let patterns = all(&['a', 'b', '/', '*', '?'], 4);
        let texts = all(&['a', 'b', '/'], 5);
        // A literal prefix of 70 characters takes the same patterns (against the shorter
        // texts) through the several-word code path.
        let pad = "x".repeat(70);
        for mode in [Mode::Name, Mode::Path] {
            for p in &patterns {
                let w = Wildcard::new(p, mode);
                let long = Wildcard::new(&format!("{pad}{p}"), mode);
                let pc: Vec<char> = p.chars().collect();
                for t in &texts {
                    let tc: Vec<char> = t.chars().collect();
                    let want = slow(&pc, &tc, mode);
                    assert_eq!(w.matches(t), want, "{mode:?} {p:?} {t:?}");
                    if t.len() <= 3 {
                        assert_eq!(
                            long.matches(&format!("{pad}{t}")),
                            want,
                            "{mode:?} {p:?} {t:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn long_patterns_span_several_words() {
        let p = format!("{}*{}", "a".repeat(70), "b".repeat(70));
        let t = format!("{}xyz{}", "a".repeat(70), "b".repeat(70));
        assert!(name(&p, &t));
        assert!(!name(&p, &t[1..]));
        let p = format!("{}?", "*a".repeat(100));
        assert!(name(&p, &format!("{}z", "a".repeat(100))));
        assert!(!name(&p, &"a".repeat(100)));
        assert!(Wildcard::bounded(&"x".repeat(MAX_PATTERN), Mode::Name).is_ok());
        assert_eq!(
            Wildcard::bounded(&"x".repeat(MAX_PATTERN + 1), Mode::Name)
                .unwrap_err()
                .to_string(),
            "pattern of 1025 characters is longer than the limit of 1024"
        );
    }

    /// The attack: stars separated by literals against a long run of the literal,
    /// which took a backtracking matcher seconds at 600 characters. Here 128 KiB inputs.
    /// The bound is a generous liveness bound (the work is a few million word operations;
    /// a backtracking matcher would not finish at all), not a performance measurement.
    #[test]
    fn adversarial_patterns_on_128_kib_inputs_are_linear() {
        let big = 128 * 1024;
        let cases: Vec<(String, String, Mode, bool)> = vec![
            ("*a*a*a*b".into(), "a".repeat(big), Mode::Name, false),
            (
                "*a*a*a*a*a*a*a*a*a*a*b".into(),
                "a".repeat(big),
                Mode::Name,
                false,
            ),
            (
                "*?*?*?*?*?*?*?*?*b".into(),
                "a".repeat(big),
                Mode::Name,
                false,
            ),
            (
                format!("{}b", "*a".repeat(300)),
                "a".repeat(big),
                Mode::Name,
                false,
            ),
            (
                format!("{}a", "*a".repeat(300)),
                "a".repeat(big),
                Mode::Name,
                true,
            ),
            (
                format!("*{}*", "?".repeat(MAX_PATTERN - 2)),
                "é".repeat(big / 2),
                Mode::Name,
                true,
            ),
            ("*a*a*a*b".into(), "a".repeat(big), Mode::Path, false),
            ("*/*/*/*b".into(), "a/".repeat(big / 2), Mode::Path, false),
        ];
        for (p, t, mode, want) in cases {
            let w = Wildcard::new(&p, mode);
            let started = Instant::now();
            assert_eq!(w.matches(&t), want, "{p}");
            let took = started.elapsed();
            assert!(
                took < Duration::from_secs(5),
                "{} characters of pattern took {took:?}",
                p.len()
            );
        }
    }
}

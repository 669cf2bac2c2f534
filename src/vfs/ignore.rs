//! Which paths a backup leaves out: a small gitignore-like matcher.
//!
//! Supported: `*` and `?` within a name, `**` across names, a pattern without `/` matching a name
//! at any depth, a leading or inner `/` anchoring it at the top, a trailing `/` for directories
//! only, `#` comments and blank lines. Not supported: `!` negation, `[...]` classes, `\` escapes.
//!
//! The patterns may be a tenant's (a `.lightdignore` is a file of the volume): lists are bounded
//! ([`MAX_PATTERNS`] of [`MAX_PATTERN_CHARS`], a file of [`MAX_FILE_BYTES`]), and a name is
//! matched in time linear in the pattern (a set of positions, no backtracking), across names in
//! `pattern × path` (backtracking to the last `**` only): no pattern explodes.

use std::io::Read;

use super::{FsError, Root};

/// Most patterns one list holds: a request's `ignore`, or the rules of a `.lightdignore`
/// (comments and blank lines not counted).
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 1024;
/// Largest `.lightdignore`, in bytes: a bigger one fails the backup, it is never cut short
/// (half of a file's patterns would archive what its other half left out).
pub const MAX_FILE_BYTES: u64 = 64 << 10;

/// Ignore patterns for a pack: the request's own plus those of the volume's `.lightdignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

/// One pattern, split into names.
#[derive(Debug, Clone)]
struct Rule {
    names: Vec<Name>,
    /// Names of the pattern that are not `**`: a path with fewer names cannot match.
    fixed_names: usize,
    anchored: bool,
    dir_only: bool,
}

/// One name of a pattern, as chars to match with `*` and `?`.
#[derive(Debug, Clone)]
struct Name {
    chars: Vec<char>,
    /// Chars that are not `*`: a shorter name cannot match, a longer one only through a `*`.
    fixed: usize,
    /// `**`: any run of names.
    any_depth: bool,
}

impl Ignore {
    /// The file at the volume root whose lines add patterns.
    pub const FILE: &'static str = ".lightdignore";

    /// Rules from patterns (each parsed as a line of an ignore file), unchecked: for lists that
    /// [`Ignore::check`] passed, or that lightd makes itself.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Ignore {
        Ignore { rules: patterns.iter().filter_map(|p| Rule::parse(p.as_ref())).collect() }
    }

    /// Whether a request's list keeps to the limits; the error names the one it passes.
    pub fn check<S: AsRef<str>>(patterns: &[S]) -> Result<(), String> {
        if patterns.len() > MAX_PATTERNS {
            return Err(format!("ignore holds {} patterns; at most {MAX_PATTERNS} are allowed", patterns.len()));
        }
        match patterns.iter().position(|p| p.as_ref().chars().count() > MAX_PATTERN_CHARS) {
            Some(i) => Err(format!("ignore pattern {} is longer than {MAX_PATTERN_CHARS} characters", i + 1)),
            None => Ok(()),
        }
    }

    /// [`Ignore::new`] plus the lines of the volume's `.lightdignore`, read confined, if it is a
    /// regular file. A file past the limits is an error naming the limit.
    pub fn load<S: AsRef<str>>(root: &Root, patterns: &[S]) -> Result<Ignore, FsError> {
        let mut ignore = Ignore::new(patterns);
        match root.open_read(Self::FILE) {
            Ok((file, _)) => {
                let mut bytes = Vec::new();
                file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
                ignore.rules.extend(file_rules(&bytes)?);
            }
            // Absent, or not a regular file the server could have meant: no patterns from it.
            Err(FsError::NotFound | FsError::IsADirectory | FsError::Invalid(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(ignore)
    }

    /// Whether `path` (`/`-separated, relative to the packed directory) is left out.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let names: Vec<Text> = path.split('/').filter(|n| !n.is_empty()).map(Text::new).collect();
        self.rules.iter().any(|rule| rule.matches(&names, is_dir))
    }
}

/// The rules of a `.lightdignore`'s bytes, within the limits.
fn file_rules(bytes: &[u8]) -> Result<Vec<Rule>, FsError> {
    let too_big = |what: String| FsError::Invalid(format!("{} {what}", Ignore::FILE));
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(format!(
            "is larger than {} KiB; at most {MAX_FILE_BYTES} bytes are read",
            MAX_FILE_BYTES >> 10
        )));
    }
    let mut rules = Vec::new();
    for (n, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
        let Some(rule) = Rule::parse(line) else { continue };
        if line.trim().chars().count() > MAX_PATTERN_CHARS {
            return Err(too_big(format!("line {} is longer than {MAX_PATTERN_CHARS} characters", n + 1)));
        }
        if rules.len() == MAX_PATTERNS {
            return Err(too_big(format!("holds more than {MAX_PATTERNS} patterns")));
        }
        rules.push(rule);
    }
    Ok(rules)
}

impl Rule {
    fn parse(line: &str) -> Option<Rule> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (line, dir_only) = match line.strip_suffix('/') {
            Some(line) => (line, true),
            None => (line, false),
        };
        let mut names: Vec<&str> = line.split('/').filter(|n| !n.is_empty()).collect();
        // `a/**` is what is inside `a`, not `a` itself: at least one more name.
        if names.len() > 1 && names.last() == Some(&"**") {
            names.insert(names.len() - 1, "*");
        }
        names.dedup_by(|a, b| *a == "**" && *b == "**");
        let names: Vec<Name> = names.iter().map(|n| Name::parse(n)).collect();
        (!names.is_empty()).then(|| Rule {
            anchored: line.contains('/'),
            dir_only,
            fixed_names: names.iter().filter(|n| !n.any_depth).count(),
            names,
        })
    }

    fn matches(&self, path: &[Text], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            self.fixed_names <= path.len() && wildcard(&self.names, path, |n| n.any_depth, |n, name| n.matches(name))
        } else {
            path.last().is_some_and(|name| self.names.iter().any(|n| n.matches(name)))
        }
    }
}

impl Name {
    fn parse(name: &str) -> Name {
        let mut chars: Vec<char> = name.chars().collect();
        // Within a name, `**` is `*`: one star backtracks as far.
        chars.dedup_by(|a, b| *a == '*' && *b == '*');
        Name { fixed: chars.iter().filter(|c| **c != '*').count(), any_depth: name == "**", chars }
    }

    /// `*` and `?` within one name; a name too short for the pattern's other chars, or of
    /// another length when it has no `*`, is told apart without matching.
    fn matches(&self, name: &Text) -> bool {
        let len = name.chars.len();
        if len < self.fixed || (self.fixed == self.chars.len() && len != self.fixed) {
            return false;
        }
        match &name.masks {
            Some(masks) => self.matches_bits(len, masks),
            None => wildcard(&self.chars, &name.chars, |p| *p == '*', |p, c| *p == '?' || p == c),
        }
    }

    /// The pattern run over the set of name positions it may have reached, one step per
    /// pattern char: time is the pattern's length, whatever the name (no backtracking).
    fn matches_bits(&self, len: usize, masks: &[(char, Bits)]) -> bool {
        let mut at = Bits::at(0);
        for c in &self.chars {
            at = match c {
                '*' => at.and_after(len),
                '?' => at.next(len),
                c => match masks.binary_search_by_key(c, |(m, _)| *m) {
                    Ok(i) => at.and(&masks[i].1).next(len),
                    Err(_) => return false,
                },
            };
            if at.is_empty() {
                return false;
            }
        }
        at.has(len)
    }
}

/// A name of the path being matched, with, when it is short enough (any name a file system
/// holds is), where each of its chars stands.
struct Text {
    chars: Vec<char>,
    /// Each distinct char, sorted, with the positions holding it.
    masks: Option<Vec<(char, Bits)>>,
}

impl Text {
    fn new(name: &str) -> Text {
        let chars: Vec<char> = name.chars().collect();
        let masks = (chars.len() < Bits::LEN).then(|| {
            let mut masks: Vec<(char, Bits)> = Vec::new();
            for (i, c) in chars.iter().enumerate() {
                match masks.binary_search_by_key(c, |(m, _)| *m) {
                    Ok(k) => masks[k].1.set(i),
                    Err(k) => masks.insert(k, (*c, Bits::at(i))),
                }
            }
            masks
        });
        Text { chars, masks }
    }
}

/// A set of positions `0..Bits::LEN` in a name: position `i` means "`i` chars matched".
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bits([u64; 4]);

impl Bits {
    const LEN: usize = 256;

    fn at(i: usize) -> Bits {
        let mut b = Bits([0; 4]);
        b.set(i);
        b
    }

    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    fn and(&self, other: &Bits) -> Bits {
        Bits(std::array::from_fn(|w| self.0[w] & other.0[w]))
    }

    /// Every position one further, none past `len`.
    fn next(&self, len: usize) -> Bits {
        let mut out = Bits(std::array::from_fn(|w| (self.0[w] << 1) | if w > 0 { self.0[w - 1] >> 63 } else { 0 }));
        out.keep_to(len);
        out
    }

    /// Every position from the first held up to `len` (what a `*` reaches).
    fn and_after(&self, len: usize) -> Bits {
        let Some(w) = self.0.iter().position(|w| *w != 0) else { return *self };
        let mut out = Bits([0; 4]);
        out.0[w] = !0 << self.0[w].trailing_zeros();
        for word in &mut out.0[w + 1..] {
            *word = !0;
        }
        out.keep_to(len);
        out
    }

    fn keep_to(&mut self, len: usize) {
        for (w, word) in self.0.iter_mut().enumerate() {
            let first = w * 64;
            if first > len {
                *word = 0;
            } else if len - first < 63 {
                *word &= (1u64 << (len - first + 1)) - 1;
            }
        }
    }
}

/// Wildcard matching with backtracking to the last star only, so time stays `pattern × text` for
/// any pattern a server may write: `star` items match any run of items, others exactly one.
fn wildcard<P, T>(pattern: &[P], text: &[T], star: impl Fn(&P) -> bool, one: impl Fn(&P, &T) -> bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && star(&pattern[p]) {
            last_star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && one(&pattern[p], &text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = last_star {
            last_star = Some((sp, st + 1));
            p = sp + 1;
            t = st + 1;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &[&str], path: &str, is_dir: bool) -> bool {
        Ignore::new(patterns).is_ignored(path, is_dir)
    }

    #[test]
    fn names_match_at_any_depth() {
        assert!(ignored(&["*.log"], "latest.log", false));
        assert!(ignored(&["*.log"], "logs/old/2024-01-01.log", false));
        assert!(!ignored(&["*.log"], "logs/latest.log.gz", false));
        assert!(ignored(&["cache"], "a/b/cache", true));
        assert!(ignored(&["?.txt"], "x/a.txt", false));
        assert!(!ignored(&["?.txt"], "x/ab.txt", false));
        assert!(ignored(&["é?"], "éé", false));
    }

    #[test]
    fn slashes_anchor_and_doublestar_crosses() {
        assert!(ignored(&["/world"], "world", true));
        assert!(!ignored(&["/world"], "saves/world", true));
        assert!(ignored(&["saves/*.dat"], "saves/level.dat", false));
        assert!(!ignored(&["saves/*.dat"], "saves/w/level.dat", false));
        assert!(ignored(&["saves/**/*.dat"], "saves/level.dat", false));
        assert!(ignored(&["saves/**/*.dat"], "saves/w/r/level.dat", false));
        assert!(ignored(&["**/session.lock"], "a/b/session.lock", false));
        assert!(ignored(&["**/session.lock"], "session.lock", false));
        assert!(ignored(&["logs/**"], "logs/a/b.txt", false));
        assert!(!ignored(&["logs/**"], "logs", true));
        assert!(!ignored(&["logs/**"], "logsx/a", false));
    }

    #[test]
    fn trailing_slash_is_for_directories() {
        assert!(ignored(&["tmp/"], "a/tmp", true));
        assert!(!ignored(&["tmp/"], "a/tmp", false));
        assert!(ignored(&["/a/tmp/"], "a/tmp", true));
    }

    #[test]
    fn comments_and_blanks_are_skipped() {
        let ignore = Ignore::new(&["# *.log", "", "   ", "*.tmp  "]);
        assert_eq!(ignore.rules.len(), 1);
        assert!(!ignore.is_ignored("a.log", false));
        assert!(ignore.is_ignored("a.tmp", false));
        assert!(!Ignore::default().is_ignored("anything", false));
    }

    #[test]
    fn the_volume_file_adds_patterns_if_it_is_a_regular_file() {
        let bed = crate::vfs::testbed::Bed::new("ignorefile");
        std::fs::write(bed.path(Ignore::FILE), "# logs\n*.log\n").unwrap();
        let ignore = Ignore::load(&bed.root, &["/cache/"]).unwrap();
        assert!(ignore.is_ignored("a/b.log", false) && ignore.is_ignored("cache", true));
        std::fs::remove_file(bed.path(Ignore::FILE)).unwrap();
        std::os::unix::fs::symlink("fifo", bed.path(Ignore::FILE)).unwrap();
        assert_eq!(Ignore::load(&bed.root, &["x"]).unwrap().rules.len(), 1);
        std::fs::remove_file(bed.path(Ignore::FILE)).unwrap();
        std::fs::create_dir(bed.path(Ignore::FILE)).unwrap();
        assert_eq!(Ignore::load(&bed.root, &["x"]).unwrap().rules.len(), 1);
    }

    #[test]
    fn hostile_patterns_do_not_explode() {
        // Exponential backtracking would not finish these; the matcher is pattern x text.
        let star_soup = format!("{}b", "*".repeat(64));
        let deep = format!("{}/x", ["**"; 32].join("/a/"));
        assert!(!ignored(&[&star_soup], &"a".repeat(4000), false));
        assert!(!ignored(&[&deep], &["a"; 200].join("/"), false));
    }

    #[test]
    fn the_position_sets_agree_with_backtracking() {
        // Random patterns over a small alphabet, so that they often match.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let alphabet = ['a', 'b', 'é', '*', '?'];
        for _ in 0..20_000 {
            let pattern: String = (0..next(8)).map(|_| alphabet[next(5) as usize]).collect();
            let name: String = (0..next(12)).map(|_| alphabet[next(3) as usize]).collect();
            let (p, text) = (Name::parse(&pattern), Text::new(&name));
            let slow = wildcard(&p.chars, &text.chars, |c| *c == '*', |p, c| *p == '?' || p == c);
            assert_eq!(p.matches(&text), slow, "{pattern:?} against {name:?}");
        }
        // Past the sets' length the matcher backtracks instead.
        let long = "a".repeat(300);
        assert!(Text::new(&long).masks.is_none());
        assert!(Name::parse("*a?").matches(&Text::new(&long)) && !Name::parse("*b").matches(&Text::new(&long)));
        assert!(Name::parse(&"?".repeat(255)).matches(&Text::new(&"é".repeat(255))));
    }

    #[test]
    fn request_lists_are_bounded() {
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert_eq!(Ignore::check(&many).unwrap_err(), "ignore holds 257 patterns; at most 256 are allowed");
        assert!(Ignore::check(&many[1..]).is_ok());
        let long = ["ok".to_string(), "x".repeat(MAX_PATTERN_CHARS + 1)];
        assert_eq!(Ignore::check(&long).unwrap_err(), "ignore pattern 2 is longer than 1024 characters");
        assert!(Ignore::check(&["é".repeat(MAX_PATTERN_CHARS)]).is_ok());
    }

    #[test]
    fn a_lightdignore_past_the_limits_is_an_error() {
        let bed = crate::vfs::testbed::Bed::new("ignorelimits");
        let fails = |content: &[u8]| {
            std::fs::write(bed.path(Ignore::FILE), content).unwrap();
            match Ignore::load(&bed.root, &["x"]) {
                Err(FsError::Invalid(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        let huge = "*a*a*a*a*b\n".repeat(100_000);
        assert_eq!(fails(huge.as_bytes()), ".lightdignore is larger than 64 KiB; at most 65536 bytes are read");
        let many = "# rule\n*.log\n\n".repeat(MAX_PATTERNS + 1);
        assert_eq!(fails(many.as_bytes()), ".lightdignore holds more than 256 patterns");
        let long = format!("ok\n\n{}\n", "x".repeat(MAX_PATTERN_CHARS + 1));
        assert_eq!(fails(long.as_bytes()), ".lightdignore line 3 is longer than 1024 characters");
        // At the limits it loads.
        let full =
            format!("{}\n", "y".repeat(MAX_PATTERN_CHARS - 1)).repeat(MAX_FILE_BYTES as usize / MAX_PATTERN_CHARS);
        std::fs::write(bed.path(Ignore::FILE), &full).unwrap();
        assert_eq!(Ignore::load(&bed.root, &["x"]).unwrap().rules.len(), 65);
    }
}

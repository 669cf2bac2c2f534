//! Which paths a backup leaves out: a small gitignore-like matcher.
//!
//! Supported: `*` and `?` within a name, `**` across names, a pattern without `/` matching a name
//! at any depth, a leading or inner `/` anchoring it at the top, a trailing `/` for directories
//! only, `#` comments and blank lines. Not supported: `!` negation, `[...]` classes, `\` escapes.

use std::io::Read;

use super::{FsError, Root};

/// Ignore patterns for a pack: the request's own plus those of the volume's `.lightdignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

/// One pattern, split into names, each name a list of chars to match with `*` and `?`.
#[derive(Debug, Clone)]
struct Rule {
    names: Vec<Vec<char>>,
    anchored: bool,
    dir_only: bool,
}

/// A `.lightdignore` longer than this is read only this far.
const MAX_FILE: u64 = 1 << 20;

impl Ignore {
    /// The file at the volume root whose lines add patterns.
    pub const FILE: &'static str = ".lightdignore";

    /// Rules from patterns (each parsed as a line of an ignore file).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Ignore {
        Ignore { rules: patterns.iter().filter_map(|p| Rule::parse(p.as_ref())).collect() }
    }

    /// [`Ignore::new`] plus the lines of the volume's `.lightdignore`, read confined, if it is a
    /// regular file.
    pub fn load<S: AsRef<str>>(root: &Root, patterns: &[S]) -> Result<Ignore, FsError> {
        let mut ignore = Ignore::new(patterns);
        match root.open_read(Self::FILE) {
            Ok((file, _)) => {
                let mut bytes = Vec::new();
                file.take(MAX_FILE).read_to_end(&mut bytes)?;
                ignore.rules.extend(String::from_utf8_lossy(&bytes).lines().filter_map(Rule::parse));
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
        let names: Vec<Vec<char>> = path.split('/').filter(|n| !n.is_empty()).map(|n| n.chars().collect()).collect();
        self.rules.iter().any(|rule| rule.matches(&names, is_dir))
    }
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
        (!names.is_empty()).then(|| Rule {
            anchored: line.contains('/'),
            dir_only,
            names: names.iter().map(|n| n.chars().collect()).collect(),
        })
    }

    fn matches(&self, path: &[Vec<char>], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            wildcard(&self.names, path, |p| p == &['*', '*'], |p, name| glob(p, name))
        } else {
            path.last().is_some_and(|name| self.names.iter().any(|p| glob(p, name)))
        }
    }
}

/// `*` and `?` within one name.
fn glob(pattern: &[char], name: &[char]) -> bool {
    wildcard(pattern, name, |p| *p == '*', |p, c| *p == '?' || p == c)
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
}

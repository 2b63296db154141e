//! Tool-name patterns: `*` matches any run of characters (including none),
//! `?` exactly one character; everything else matches itself, byte for byte.

/// A compiled tool-name pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    chars: Vec<char>,
    /// Non-wildcard characters: more means more specific.
    pub literals: usize,
    pub stars: usize,
}

/// Whether a `tools` key is a pattern rather than an exact name.
pub(crate) fn is_pattern(key: &str) -> bool {
    key.contains(['*', '?'])
}

impl Pattern {
    pub(crate) fn new(text: &str) -> Pattern {
        let chars: Vec<char> = text.chars().collect();
        let stars = chars.iter().filter(|&&c| c == '*').count();
        let literals = chars.iter().filter(|&&c| c != '*' && c != '?').count();
        Pattern {
            chars,
            literals,
            stars,
        }
    }

    /// Linear-time wildcard match with single-star backtracking.
    /// `name` is the tool name as characters (collected once per lookup).
    pub(crate) fn matches(&self, name: &[char]) -> bool {
        let p = &self.chars;
        let (mut pi, mut ni) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ni < name.len() {
            if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == name[ni])) {
                pi += 1;
                ni += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ni));
                pi += 1;
            } else if let Some((star_pi, star_ni)) = star {
                pi = star_pi + 1;
                ni = star_ni + 1;
                star = Some((star_pi, star_ni + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, name: &str, expected: bool) {
        assert_eq!(
            Pattern::new(pattern).matches(&name.chars().collect::<Vec<_>>()),
            expected,
            "{pattern:?} vs {name:?}"
        );
    }

    #[test]
    fn matching() {
        check("*", "", true);
        check("*", "anything", true);
        check("delete_*", "delete_", true);
        check("delete_*", "delete_file", true);
        check("delete_*", "undelete_file", false);
        check("*_file", "delete_file", true);
        check("*_file", "delete_files", false);
        check("a*b*c", "abc", true);
        check("a*b*c", "axxbyyc", true);
        check("a*b*c", "axxbyy", false);
        check("a?c", "abc", true);
        check("a?c", "ac", false);
        check("a?c", "aéc", true);
        check("send_t?xt", "send_tеxt", true); // Cyrillic е is one character
        check("send_text", "send_tеxt", false);
        check("Send_*", "send_text", false);
        check("*.*", "a.b", true);
        check("[a]", "a", false);
        check("[a]", "[a]", true);
    }
}

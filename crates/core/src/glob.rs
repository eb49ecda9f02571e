//! Model patterns: `*` matches any run of characters, `?` exactly one; everything else is literal.
//!
//! Model ids are short, so a simple backtracking matcher over bytes is both correct and faster
//! than compiling a regex per pattern.

pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` in the pattern and the text index it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// True when the pattern contains no wildcard, i.e. names exactly one model.
pub fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn examples() {
        assert!(matches("deepseek-*", "deepseek-chat"));
        assert!(matches("deepseek-*", "deepseek-"));
        assert!(!matches("deepseek-*", "deepseek"));
        assert!(matches("*", ""));
        assert!(matches("gpt-?o", "gpt-4o"));
        assert!(matches("*-mini", "gpt-4o-mini"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
    }

    proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z0-9-]{0,12}", b in "[a-z0-9-]{0,12}") {
            prop_assert_eq!(matches(&a, &b), a == b);
        }

        #[test]
        fn prefix_star_matches_every_extension(a in "[a-z-]{0,8}", rest in "[a-z0-9-]{0,8}") {
            let pattern = format!("{a}*");
            let text = format!("{a}{rest}");
            prop_assert!(matches(&pattern, &text));
        }
    }
}

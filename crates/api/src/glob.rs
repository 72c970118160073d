//! Name patterns of replication and preheat filters, as Harbor users
//! write them: `*` matches within one path component, `**` across
//! components, `?` one character, `{a,b}` either alternative (not nested).
//! Matching is linear in the text (no backtracking).

/// A parsed pattern: one alternative per `{...}` expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    alternatives: Vec<Vec<Token>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    One,
    Star,
    DoubleStar,
}

/// Expansions beyond this mean a pattern nobody meant to write.
const MAX_ALTERNATIVES: usize = 64;

impl Glob {
    /// Parses `pattern`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() || pattern.len() > 255 {
            return Err(format!("pattern {pattern:?} must be 1-255 characters"));
        }
        let alternatives = expand(pattern)?.iter().map(|text| tokens(text)).collect();
        Ok(Glob { alternatives })
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        self.alternatives
            .iter()
            .any(|tokens| match_here(tokens, &text))
    }
}

/// Expands one level of `{a,b,...}` groups into plain patterns.
fn expand(pattern: &str) -> Result<Vec<String>, String> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(format!("pattern {pattern:?} has '}}' without '{{'"));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| format!("pattern {pattern:?} has '{{' without '}}'"))?;
    let inner = &pattern[open + 1..close];
    if inner.contains('{') {
        return Err(format!("pattern {pattern:?} nests '{{'"));
    }
    let mut out = Vec::new();
    for rest in expand(&pattern[close + 1..])? {
        for choice in inner.split(',') {
            out.push(format!("{}{choice}{rest}", &pattern[..open]));
            if out.len() > MAX_ALTERNATIVES {
                return Err(format!(
                    "pattern {pattern:?} expands to too many alternatives"
                ));
            }
        }
    }
    Ok(out)
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '?' => Token::One,
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Token::DoubleStar
            }
            '*' => Token::Star,
            c => Token::Char(c),
        });
    }
    out
}

/// Runs the pattern as a nondeterministic automaton over `text`, one set of
/// live positions per character: O(pattern × text) whatever the pattern.
/// (Backtracking, tried first, took seconds on `*a*a*a*a*a*a*a*ab`.)
fn match_here(tokens: &[Token], text: &[char]) -> bool {
    let mut live = vec![false; tokens.len() + 1];
    live[0] = true;
    close_over_stars(tokens, &mut live);
    let mut next = vec![false; tokens.len() + 1];
    for &c in text {
        next.iter_mut().for_each(|n| *n = false);
        for (i, token) in tokens.iter().enumerate() {
            if !live[i] {
                continue;
            }
            match token {
                Token::Char(expected) if *expected == c => next[i + 1] = true,
                Token::One if c != '/' => next[i + 1] = true,
                Token::Star if c != '/' => next[i] = true,
                Token::DoubleStar => next[i] = true,
                _ => {}
            }
        }
        close_over_stars(tokens, &mut next);
        if !next.contains(&true) {
            return false;
        }
        std::mem::swap(&mut live, &mut next);
    }
    live[tokens.len()]
}

/// Stars match the empty string: a live star makes the position after it
/// live too.
fn close_over_stars(tokens: &[Token], live: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if live[i] && matches!(token, Token::Star | Token::DoubleStar) {
            live[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, text: &str) -> bool {
        Glob::parse(pattern).unwrap().matches(text)
    }

    #[test]
    fn star_stays_within_a_component() {
        assert!(m("shop/*", "shop/web"));
        assert!(!m("shop/*", "shop/web/api"));
        assert!(m("shop/**", "shop/web/api"));
        assert!(m("**", "a/b/c"));
        assert!(m("*/web", "shop/web"));
        assert!(!m("*/web", "shop/x/web"));
    }

    #[test]
    fn question_mark_and_alternatives() {
        assert!(m("v1.?", "v1.2"));
        assert!(!m("v1.?", "v1.22"));
        assert!(m("{release,stable}-*", "stable-3"));
        assert!(m("{release,stable}-*", "release-"));
        assert!(!m("{release,stable}-*", "beta-1"));
        assert!(m("v{1,2}.{0,1}", "v2.1"));
        assert!(!m("latest", "latest2"));
    }

    #[test]
    fn adversarial_patterns_match_in_linear_time() {
        // Exponential for a backtracking matcher: about 30 s each before.
        let tag = "a".repeat(60);
        for pattern in [
            "*a*a*a*a*a*a*a*ab",
            "**a**a**a**a**a**a**a**ab",
            "?*?*?*?*?*?*?*?*b",
        ] {
            assert!(!m(pattern, &tag), "{pattern}");
            assert!(m(pattern, &format!("{tag}b")), "{pattern}");
        }
        let long = format!("{}/{}", "a".repeat(127), "a".repeat(127));
        assert!(m(&"*a".repeat(60), &"a".repeat(127)));
        assert!(!m(&format!("{}b", "*a".repeat(60)), &long));
        assert!(m("**a", &long));
        assert!(!m("*a", &long), "a single star stays within a component");
    }

    #[test]
    fn malformed_patterns_are_refused() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a{b").is_err());
        assert!(Glob::parse("a}b").is_err());
        assert!(Glob::parse("{a,{b}}").is_err());
        let huge = "{a,b,c,d}".repeat(4);
        assert!(Glob::parse(&huge).is_err());
    }
}

//! Name patterns of replication filters, as Harbor users write them:
//! `*` matches within one path component, `**` across components, `?` one
//! character, `{a,b}` either alternative (not nested).

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

fn match_here(tokens: &[Token], text: &[char]) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Char(c), rest)) => text.first() == Some(c) && match_here(rest, &text[1..]),
        Some((Token::One, rest)) => {
            text.first().is_some_and(|c| *c != '/') && match_here(rest, &text[1..])
        }
        Some((Token::Star, rest)) => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|n| match_here(rest, &text[n..]))
        }
        Some((Token::DoubleStar, rest)) => (0..=text.len()).any(|n| match_here(rest, &text[n..])),
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
    fn malformed_patterns_are_refused() {
        assert!(Glob::parse("").is_err());
        assert!(Glob::parse("a{b").is_err());
        assert!(Glob::parse("a}b").is_err());
        assert!(Glob::parse("{a,{b}}").is_err());
        let huge = "{a,b,c,d}".repeat(4);
        assert!(Glob::parse(&huge).is_err());
    }
}

//! Reading passwords: lines on standard input for scripts, a prompt on the
//! terminal without echo for people. Passwords never reach argv, where other
//! users could read them in `ps`.

use std::io::BufRead;

use anyhow::{Context, Result, bail};

/// Reads `count` passwords, one per line, from standard input.
pub fn from_stdin(count: usize) -> Result<Vec<String>> {
    read_lines(std::io::stdin().lock(), count)
}

fn read_lines(mut input: impl BufRead, count: usize) -> Result<Vec<String>> {
    let mut passwords = Vec::with_capacity(count);
    for number in 1..=count {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .context("reading a password from standard input")?;
        let password = line
            .strip_suffix('\n')
            .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
            .unwrap_or(&line);
        if password.is_empty() {
            bail!(
                "expected {count} password line(s) on standard input, line {number} is empty or missing"
            );
        }
        passwords.push(password.to_string());
    }
    Ok(passwords)
}

/// Asks for a password on the terminal, without echo.
pub fn prompt(prompt: &str) -> Result<String> {
    let password = rpassword::prompt_password(prompt)
        .context("cannot ask for the password on a terminal (use --password-stdin)")?;
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}

/// Asks for a new password twice, so a typo does not lock anyone out.
pub fn prompt_new(prompt_text: &str) -> Result<String> {
    let password = prompt(prompt_text)?;
    if prompt("repeat it: ")? != password {
        bail!("the passwords did not match; nothing was changed");
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_only_their_line_ending() {
        let read = |text: &str, count| read_lines(text.as_bytes(), count);
        assert_eq!(read("s3cret pass \n", 1).unwrap(), ["s3cret pass "]);
        assert_eq!(read("crlf\r\nnext", 2).unwrap(), ["crlf", "next"]);
        assert_eq!(read("only-line", 1).unwrap(), ["only-line"]);
        assert_eq!(read("old\nnew\nignored\n", 2).unwrap(), ["old", "new"]);
        let missing = read("old\n", 2).unwrap_err().to_string();
        assert!(missing.contains("line 2"), "{missing}");
        assert!(read("\n", 1).is_err());
        assert!(read("", 1).is_err());
    }
}

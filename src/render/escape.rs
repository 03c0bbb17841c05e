//! How recorded text is made safe where it is shown: inside HTML (the
//! pages' escaper, which askama calls on every value of a `.html`
//! template), inside Markdown, and stored times as people read them.
//! Knows nothing of the documents.

use std::fmt;

/// Writes `text` escaped for HTML: the five characters HTML gives a
/// meaning, and a control character replaced (it has no place on a page,
/// and one could pose as the mark where the rows go).
fn write_html(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '&' => out.write_str("&amp;")?,
            '<' => out.write_str("&lt;")?,
            '>' => out.write_str("&gt;")?,
            '"' => out.write_str("&quot;")?,
            '\'' => out.write_str("&#39;")?,
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => {
                out.write_char('\u{fffd}')?
            }
            c => out.write_char(c)?,
        }
    }
    Ok(())
}

/// The pages' escaper: askama.toml names it for `.html` templates, so
/// every value a page shows goes through these rules unless a
/// template says `|safe` (only for fragments rendered by a template).
#[derive(Debug, Clone, Copy)]
pub struct PageEscaper;

impl askama::filters::Escaper for PageEscaper {
    fn write_escaped_str<W: fmt::Write>(&self, mut dest: W, string: &str) -> fmt::Result {
        write_html(&mut dest, string)
    }
}

/// Text as Markdown shows it, never as markup: every character Markdown
/// or HTML gives a meaning is escaped, and a line break is a space (a rule
/// name cannot open a heading or a list of its own). Safe inside a table
/// cell.
pub fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '-' | '.'
            | '!' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A stored time as people read it: `2026-11-29 14:22:45.913`, UTC.
pub fn utc(stored: &str) -> String {
    stored
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// A sentence as it begins a paragraph.
pub fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use askama::filters::Escaper as _;

    fn esc(text: &str) -> String {
        let mut out = String::new();
        PageEscaper.write_escaped_str(&mut out, text).unwrap();
        out
    }

    #[test]
    fn html_escapes_what_a_subject_or_rule_could_inject() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("a\u{1}b\nc"), "a\u{fffd}b\nc");
        assert_eq!(md("a|b\nc"), "a\\|b c");
        assert_eq!(
            md("x\n\n## Completeness <img src=x>"),
            "x  \\#\\# Completeness &lt;img src=x&gt;"
        );
    }
}

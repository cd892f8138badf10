//! Text that came from outside (a store, an archive) on its way into an error
//! message or a terminal: bounded and with control characters escaped, so a
//! hostile document can neither flood stderr nor drive the terminal.

/// At most this many characters of untrusted content appear in a message.
pub const EXCERPT_CHARS: usize = 64;

/// A short, escaped, quoted excerpt of untrusted bytes for an error message:
/// invalid UTF-8 and control characters are escaped, and anything past
/// [`EXCERPT_CHARS`] is cut and counted.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::from("\"");
    for (shown, c) in text.chars().enumerate() {
        if shown == EXCERPT_CHARS {
            out.push_str(&format!("\"… ({} bytes in all)", bytes.len()));
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// A string from a store or archive made safe to print on a terminal: control
/// characters (escape sequences, newlines, carriage returns) are shown escaped.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| !c.is_control()) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt(b"sha256:ab"), "\"sha256:ab\"");
        assert_eq!(excerpt(b"a\x1b[31mb\n"), "\"a\\u{1b}[31mb\\n\"");
        let long = vec![b'x'; 10_000];
        let e = excerpt(&long);
        assert!(e.len() < 100 && e.ends_with("(10000 bytes in all)"), "{e}");
        assert_eq!(excerpt(&[0xff, b'a']), "\"\u{fffd}a\"");
    }

    #[test]
    fn printable_escapes_control_characters_only() {
        assert_eq!(printable("app:v1.2 ü"), "app:v1.2 ü");
        assert_eq!(printable("a\nb\x1b[2J"), "a\\nb\\u{1b}[2J");
    }
}

//! Text from the server or the file system, made safe to print on a terminal: a file
//! name could otherwise carry escape sequences that rewrite the screen, line breaks that
//! forge output lines, or bidirectional overrides that show a name reversed.

/// `text` with control characters, line breaks and bidirectional controls written as
/// `\u{…}` escapes; everything else as it is.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if needs_escape(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls_line_breaks_and_bidi_overrides() {
        assert_eq!(printable("report.pdf"), "report.pdf");
        assert_eq!(printable("naïve 文件.txt"), "naïve 文件.txt");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\r\ny"), "x\\u{d}\\u{a}y");
        assert_eq!(printable("evil\u{202E}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
    }
}

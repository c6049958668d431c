//! Text the API stores: "blank" means only these spaces, the same ones the
//! documented pattern `^[^\x00]*[^\x00\t\n\x0b\x0c\r ][^\x00]*$` names, so
//! that the API and any JSON Schema engine agree on what is blank.

/// Space, tab, line feed, vertical tab, form feed, carriage return.
pub fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// The text without leading and trailing spaces.
pub fn trim(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Nothing but spaces (or nothing at all).
pub fn is_blank(s: &str) -> bool {
    s.chars().all(is_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_spaces_are_blank() {
        assert!(is_blank(" \t\r\n\x0b\x0c"));
        assert!(!is_blank("\u{85}"));
        assert!(!is_blank("\u{a0}"));
        assert_eq!(trim("  Soup \t"), "Soup");
        assert_eq!(trim("\u{85}"), "\u{85}");
    }
}

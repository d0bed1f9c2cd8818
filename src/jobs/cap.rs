//! Cutting text to a byte cap without splitting a character, so the cut is visible in a flag
//! rather than in broken UTF-8.

/// Cuts `text` to at most `cap` bytes at a character boundary; says whether anything was cut.
pub fn cap_text(mut text: String, cap: usize) -> (String, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::cap_text;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(cap_text("abc".into(), 3), ("abc".into(), false));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(cap_text("abcdef".into(), 4), ("abcd".into(), true));
        // "é" is two bytes: a cap inside it keeps neither half.
        assert_eq!(cap_text("aé".into(), 2), ("a".into(), true));
        assert_eq!(cap_text("é".into(), 0), (String::new(), true));
    }
}

//! RocketMQ tag subscription expressions: `*` (everything), `TAG`, or `A || B || C`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagExpression {
    All,
    AnyOf(Vec<String>),
}

impl TagExpression {
    /// Parses an expression; an empty one, or one with an empty alternative, is refused.
    pub fn parse(text: &str) -> Result<TagExpression, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(TagExpression::All);
        }
        if text.is_empty() {
            return Err("empty tag expression (use '*' for all tags)".into());
        }
        let tags: Vec<String> = text.split("||").map(|t| t.trim().to_owned()).collect();
        if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.contains(char::is_whitespace)) {
            return Err(format!("bad tag {bad:?} in expression {text:?}"));
        }
        Ok(TagExpression::AnyOf(tags))
    }

    pub fn matches(&self, tag: &str) -> bool {
        match self {
            TagExpression::All => true,
            TagExpression::AnyOf(tags) => tags.iter().any(|t| t == tag),
        }
    }
}

impl fmt::Display for TagExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagExpression::All => f.write_str("*"),
            TagExpression::AnyOf(tags) => f.write_str(&tags.join(" || ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_single_and_alternatives() {
        assert!(TagExpression::parse("*").unwrap().matches("X"));
        let one = TagExpression::parse("ORDER_CREATED").unwrap();
        assert!(one.matches("ORDER_CREATED") && !one.matches("ORDER"));
        let two = TagExpression::parse("A || B").unwrap();
        assert!(two.matches("A") && two.matches("B") && !two.matches("C"));
        assert_eq!(two.to_string(), "A || B");
    }

    #[test]
    fn malformed_expressions_are_refused() {
        assert!(TagExpression::parse("").is_err());
        assert!(TagExpression::parse("A ||").is_err());
        assert!(TagExpression::parse("A B").is_err());
    }
}

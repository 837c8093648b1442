//! The `rename_all` rules: how a method name becomes an event name.

/// A naming convention for event names, as serde names its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenameRule {
    Lower,
    Upper,
    Pascal,
    Camel,
    Snake,
    ScreamingSnake,
    Kebab,
    ScreamingKebab,
}

/// Every rule, by the name `rename_all` takes.
pub(crate) const RULES: &[(&str, RenameRule)] = &[
    ("lowercase", RenameRule::Lower),
    ("UPPERCASE", RenameRule::Upper),
    ("PascalCase", RenameRule::Pascal),
    ("camelCase", RenameRule::Camel),
    ("snake_case", RenameRule::Snake),
    ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnake),
    ("kebab-case", RenameRule::Kebab),
    ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebab),
];

impl RenameRule {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// The rule whose name differs from `name` only in case and separators.
    pub(crate) fn closest(name: &str) -> Option<&'static str> {
        let fold = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_alphanumeric())
                .map(|c| c.to_ascii_lowercase())
                .collect()
        };
        let wanted = fold(name);
        // Several rules fold alike (`kebab-case`, `SCREAMING-KEBAB-CASE`): prefer the
        // one whose letters' case matches too.
        let mut candidates = RULES.iter().map(|(n, _)| *n).filter(|n| fold(n) == wanted);
        let first = candidates.next()?;
        Some(
            std::iter::once(first)
                .chain(candidates)
                .find(|n| {
                    n.chars()
                        .filter(|c| c.is_alphabetic())
                        .eq(name.chars().filter(|c| c.is_alphabetic()))
                })
                .unwrap_or(first),
        )
    }

    /// Applies the rule to a snake_case method name.
    pub(crate) fn apply(self, name: &str) -> String {
        match self {
            RenameRule::Lower | RenameRule::Snake => name.to_owned(),
            RenameRule::Upper | RenameRule::ScreamingSnake => name.to_ascii_uppercase(),
            RenameRule::Pascal => pascal(name),
            RenameRule::Camel => {
                let pascal = pascal(name);
                let mut chars = pascal.chars();
                match chars.next() {
                    Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                    None => pascal,
                }
            }
            RenameRule::Kebab => name.replace('_', "-"),
            RenameRule::ScreamingKebab => name.replace('_', "-").to_ascii_uppercase(),
        }
    }
}

fn pascal(name: &str) -> String {
    name.split('_')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_renames_a_snake_case_method() {
        let cases = [
            ("lowercase", "pick_hand"),
            ("UPPERCASE", "PICK_HAND"),
            ("PascalCase", "PickHand"),
            ("camelCase", "pickHand"),
            ("snake_case", "pick_hand"),
            ("SCREAMING_SNAKE_CASE", "PICK_HAND"),
            ("kebab-case", "pick-hand"),
            ("SCREAMING-KEBAB-CASE", "PICK-HAND"),
        ];
        for (rule, expected) in cases {
            let rule = RenameRule::from_name(rule).unwrap();
            assert_eq!(rule.apply("pick_hand"), expected);
        }
        assert_eq!(RenameRule::Camel.apply("ping"), "ping");
    }

    #[test]
    fn a_misspelt_rule_finds_its_closest_name() {
        assert_eq!(RenameRule::closest("kebab_case"), Some("kebab-case"));
        assert_eq!(RenameRule::closest("CamelCase"), Some("camelCase"));
        assert_eq!(
            RenameRule::closest("SCREAMING_KEBAB_CASE"),
            Some("SCREAMING-KEBAB-CASE")
        );
        assert_eq!(RenameRule::closest("shouting"), None);
    }
}

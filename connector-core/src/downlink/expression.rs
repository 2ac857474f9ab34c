//! ThingsBoard's attribute-request expressions, parsed once at load:
//! `requestExpression` `${[0:3]==atr}` says which messages are requests, `attributeNameExpression`
//! `[4:19][20:]` which slices name the requested keys.
//!
//! Every slice form works here (`[a:b]`, `[:b]`, `[a:]`, `[n]`, negative indices); ThingsBoard
//! accepts the same strings but crashes its converter thread on all but `[a:b]`.

use std::sync::LazyLock;

use regex::Regex;

use crate::convert::slice::python_slice;

/// One `[...]` group: a Python slice or a single index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    Range(Option<i64>, Option<i64>),
    Index(i64),
}

impl Selector {
    pub fn select<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        match *self {
            Selector::Range(from, to) => python_slice(data, from, to),
            Selector::Index(index) => {
                let len = data.len() as i64;
                let index = if index < 0 { index + len } else { index };
                if (0..len).contains(&index) {
                    &data[index as usize..index as usize + 1]
                } else {
                    &[]
                }
            }
        }
    }
}

/// Decides whether a message is an attribute request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestMatcher {
    /// `${[from:to]==literal}`: the slice, decoded as UTF-8, equals the literal.
    SliceEquals { selector: Selector, literal: String },
    /// `requestExpressionSource: constant`: the whole message (trimmed) equals the text.
    Constant(String),
}

impl RequestMatcher {
    pub fn parse(expression: &str, constant: bool) -> Result<Self, String> {
        if constant {
            return Ok(Self::Constant(expression.trim().to_owned()));
        }
        let inner = expression
            .trim()
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| format!("{expression:?} is not of the form ${{[from:to]==text}}"))?;
        let (slice, literal) = inner
            .split_once("==")
            .ok_or_else(|| format!("{expression:?} has no == comparison"))?;
        let selectors = parse_selectors(slice)?;
        match selectors.as_slice() {
            [selector] => Ok(Self::SliceEquals {
                selector: *selector,
                literal: literal.to_owned(),
            }),
            _ => Err(format!(
                "{expression:?} must compare exactly one [from:to] slice"
            )),
        }
    }

    pub fn matches(&self, message: &[u8]) -> bool {
        match self {
            Self::SliceEquals { selector, literal } => {
                selector.select(message) == literal.as_bytes()
            }
            Self::Constant(text) => String::from_utf8_lossy(message).trim() == text,
        }
    }
}

/// Says which keys a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyNames {
    /// Slices of the message, each decoded as UTF-8 and trimmed.
    Slices(Vec<Selector>),
    /// `attributeNameExpressionSource: constant`: these names, comma-separated in the config.
    Constant(Vec<String>),
}

impl KeyNames {
    pub fn parse(expression: &str, constant: bool) -> Result<Self, String> {
        if constant {
            let names: Vec<String> = expression
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect();
            if names.is_empty() {
                return Err("names no attribute".to_owned());
            }
            return Ok(Self::Constant(names));
        }
        let selectors = parse_selectors(expression)?;
        if selectors.is_empty() {
            return Err(format!(
                "{expression:?} has no [from:to] slice naming an attribute"
            ));
        }
        Ok(Self::Slices(selectors))
    }

    /// The requested keys; empty names (slices beyond the message) are left out.
    pub fn keys(&self, message: &[u8]) -> Vec<String> {
        match self {
            Self::Constant(names) => names.clone(),
            Self::Slices(selectors) => selectors
                .iter()
                .map(|s| String::from_utf8_lossy(s.select(message)).trim().to_owned())
                .filter(|k| !k.is_empty())
                .collect(),
        }
    }
}

static GROUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\s*(-?\d+)?\s*(?::\s*(-?\d+)?\s*)?\]").expect("valid selector regex")
});

/// All `[...]` groups of an expression; text between groups is ignored, as in ThingsBoard.
fn parse_selectors(text: &str) -> Result<Vec<Selector>, String> {
    let mut selectors = Vec::new();
    for captures in GROUP.captures_iter(text) {
        let whole = captures.get(0).map_or("", |m| m.as_str());
        let number = |i: usize| -> Result<Option<i64>, String> {
            captures
                .get(i)
                .map(|m| {
                    m.as_str()
                        .parse::<i64>()
                        .map_err(|_| format!("{whole}: index out of range"))
                })
                .transpose()
        };
        let from = number(1)?;
        let to = number(2)?;
        let selector = if whole.contains(':') {
            Selector::Range(from, to)
        } else {
            match from {
                Some(index) => Selector::Index(index),
                None => return Err(format!("{whole}: empty index")),
            }
        };
        selectors.push(selector);
    }
    Ok(selectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_forms() {
        let request = RequestMatcher::parse("${[0:3]==atr}", false).unwrap();
        assert!(request.matches(b"atr sharedAttribute sharedAttribute1"));
        assert!(!request.matches(b"at"));
        assert!(!request.matches(b"xyz sharedAttribute"));
        let names = KeyNames::parse("[4:19][20:]", false).unwrap();
        assert_eq!(
            names.keys(b"atr sharedAttribute sharedAttribute1"),
            ["sharedAttribute", "sharedAttribute1"]
        );
        // `[3:]` on "atr sharedName\n": ThingsBoard asks for " sharedName\n"; the intent is trimmed.
        let open = KeyNames::parse("[3:]", false).unwrap();
        assert_eq!(open.keys(b"atr sharedName\n"), ["sharedName"]);
    }

    #[test]
    fn every_slice_form_works() {
        let cases: [(&str, &[u8], bool); 7] = [
            ("${[:3]==atr}", b"atr x", true),
            ("${[3:]==x}", b"atrx", true),
            ("${[0]==a}", b"abc", true),
            ("${[-1]==c}", b"abc", true),
            ("${[-3:-1]==ab}", b"abc", true),
            ("${[0:3]==atr}", b"\xff\xfe\xfd", false),
            ("${[5]==a}", b"abc", false),
        ];
        for (expression, message, expected) in cases {
            let matcher = RequestMatcher::parse(expression, false).unwrap();
            assert_eq!(
                matcher.matches(message),
                expected,
                "{expression} on {message:?}"
            );
        }
        let names = KeyNames::parse("[0][-2:]", false).unwrap();
        assert_eq!(names.keys(b"abcde"), ["a", "de"]);
    }

    #[test]
    fn constants() {
        assert!(RequestMatcher::parse("get-config", true)
            .unwrap()
            .matches(b"get-config\r\n"));
        assert_eq!(
            KeyNames::parse("a, b", true).unwrap().keys(b"whatever"),
            ["a", "b"]
        );
    }

    #[test]
    fn malformed_expressions_are_errors() {
        for bad in ["[0:3]==atr", "${[0:3]atr}", "${atr==x}", "${[0:1][1:2]==x}"] {
            assert!(RequestMatcher::parse(bad, false).is_err(), "{bad}");
        }
        assert!(KeyNames::parse("name", false).is_err());
        assert!(KeyNames::parse("[99999999999999999999:]", false).is_err());
        assert!(KeyNames::parse(" , ", true).is_err());
    }

    proptest! {
        #[test]
        fn parsing_and_matching_never_panic(expression in "\\PC{0,30}", message in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(matcher) = RequestMatcher::parse(&expression, false) {
                let _ = matcher.matches(&message);
            }
            if let Ok(names) = KeyNames::parse(&expression, false) {
                let _ = names.keys(&message);
            }
        }

        #[test]
        fn bracketed_slices_parse(from in proptest::option::of(-20i64..20), to in proptest::option::of(-20i64..20), message in proptest::collection::vec(any::<u8>(), 0..30)) {
            let fmt = |b: Option<i64>| b.map(|v| v.to_string()).unwrap_or_default();
            let expression = format!("[{}:{}]", fmt(from), fmt(to));
            let names = KeyNames::parse(&expression, false).unwrap();
            prop_assert_eq!(names, KeyNames::Slices(vec![Selector::Range(from, to)]));
            let selected = Selector::Range(from, to).select(&message);
            prop_assert_eq!(selected, python_slice(&message, from, to));
        }
    }
}

//! Reads only the parts of a JSON body that a trigger's expressions refer to.
//!
//! Building a whole `serde_json::Value` for a 10 KiB push payload costs thousands of small
//! allocations, most of them for fields no condition reads. A [`Projection`] is built once from
//! the trigger's payload references; [`Projection::project`] then makes one pass over the body,
//! skipping unreferenced values without allocating, and keeps only the referenced subtrees. A
//! path looked up in the result gives exactly what it gives in the full parse.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::context::parse_payload;
use super::reference::Segment;
use super::Reference;

/// The payload paths a trigger reads, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Projection {
    /// `None` when nothing reads the payload.
    root: Option<Node>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Node {
    /// The whole value is referenced (a path ends here).
    whole: bool,
    /// Children by object key or array index.
    children: Vec<(Segment, Node)>,
}

impl Node {
    fn child(&self, key: &str) -> Option<&Node> {
        self.children
            .iter()
            .find(|(s, _)| matches!(s, Segment::Key(k) if k == key))
            .map(|(_, n)| n)
    }

    fn element(&self, index: usize) -> Option<&Node> {
        self.children
            .iter()
            .find(|(s, _)| s.as_index() == Some(index))
            .map(|(_, n)| n)
    }

    fn elements(&self, index: usize) -> usize {
        self.children
            .iter()
            .filter(|(s, _)| s.as_index() == Some(index))
            .count()
    }

    fn max_index(&self) -> Option<usize> {
        self.children.iter().filter_map(|(s, _)| s.as_index()).max()
    }
}

impl Projection {
    /// A projection that keeps everything.
    pub fn whole() -> Self {
        Self {
            root: Some(Node {
                whole: true,
                children: Vec::new(),
            }),
        }
    }

    /// The projection that serves every payload reference among `references`.
    pub fn of<'r>(references: impl IntoIterator<Item = &'r Reference>) -> Self {
        let mut projection = Self::default();
        for reference in references {
            if let Reference::Payload(path) = reference {
                projection.add(path);
            }
        }
        projection
    }

    /// Adds a path (from `<+trigger.payload...>`; empty for the whole payload).
    pub fn add(&mut self, path: &[Segment]) {
        let mut node = self.root.get_or_insert_with(Node::default);
        for segment in path {
            if node.whole {
                return;
            }
            let at = match node.children.iter().position(|(s, _)| s == segment) {
                Some(at) => at,
                None => {
                    node.children.push((segment.clone(), Node::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[at].1;
        }
        node.whole = true;
        node.children.clear();
    }

    /// Whether anything reads the payload.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    /// The body as expressions see it (as [`parse_payload`] would give it), keeping only the
    /// referenced parts of a JSON object or array.
    pub fn project(&self, body: &str) -> Value {
        let Some(root) = &self.root else {
            return Value::Null;
        };
        if root.whole {
            return parse_payload(body);
        }
        let trimmed = body.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return Value::String(body.to_owned());
        }
        let mut deserializer = serde_json::Deserializer::from_str(body);
        match root
            .deserialize(&mut deserializer)
            .and_then(|v| deserializer.end().map(|()| v))
        {
            Ok(value @ (Value::Object(_) | Value::Array(_))) => value,
            _ => Value::String(body.to_owned()),
        }
    }
}

impl<'de> DeserializeSeed<'de> for &Node {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.whole {
            Value::deserialize(d)
        } else {
            d.deserialize_any(NodeVisitor(self))
        }
    }
}

struct NodeVisitor<'n>(&'n Node);

impl<'de> Visitor<'de> for NodeVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.0.child(&key) {
                Some(child) => {
                    out.insert(key.into_owned(), map.next_value_seed(child)?);
                }
                None => {
                    map.next_value_seed(Skip)?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Skipped elements up to the last referenced index stay as null placeholders so that
        // referenced indexes keep their place; later ones are only skipped.
        let last = self.0.max_index();
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            let done = match self.0.element(index) {
                // `a.0` and `a[0]` (or `a.00`) name the same element: keep it whole.
                Some(_) if self.0.elements(index) > 1 => match seq.next_element::<Value>()? {
                    Some(v) => {
                        out.push(v);
                        false
                    }
                    None => true,
                },
                Some(child) => match seq.next_element_seed(child)? {
                    Some(v) => {
                        out.push(v);
                        false
                    }
                    None => true,
                },
                None => match seq.next_element_seed(Skip)? {
                    Some(_) if last.is_some_and(|l| index < l) => {
                        out.push(Value::Null);
                        false
                    }
                    Some(_) => false,
                    None => true,
                },
            };
            if done {
                return Ok(Value::Array(out));
            }
            index += 1;
        }
    }
}

/// Skips a value without building it, but checks it exactly as a full parse would (string
/// escapes, number range, nesting limit): `IgnoredAny` uses serde_json's lenient skipper, which
/// accepts lone surrogates, `1e400` and unbounded nesting.
struct Skip;

impl<'de> DeserializeSeed<'de> for Skip {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Skip)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(Skip)?.is_some() {
            map.next_value_seed(Skip)?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::reference::{lookup, parse};
    use serde_json::json;

    fn path(text: &str) -> Vec<Segment> {
        match parse(text).unwrap() {
            Reference::Payload(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn projection(paths: &[&str]) -> Projection {
        let mut p = Projection::default();
        for text in paths {
            p.add(&path(text));
        }
        p
    }

    const BODY: &str = r#"{"ref":"refs/heads/main","skip":{"big":[1,2,3]},"commits":[{"m":"a"},{"m":"b","x":1},{"m":"c"}],"esc\"key":"v","n":1.5,"t":true,"z":null}"#;

    #[test]
    fn only_referenced_parts_are_kept_and_lookups_agree_with_a_full_parse() {
        let paths = [
            "<+trigger.payload.ref>",
            "<+trigger.payload.commits[1].m>",
            "<+trigger.payload.commits.2>",
            "<+trigger.payload['esc\"key']>",
            "<+trigger.payload.n>",
            "<+trigger.payload.t>",
            "<+trigger.payload.z>",
            "<+trigger.payload.missing.deeper>",
            "<+trigger.payload.commits[7].m>",
            "<+trigger.payload.ref.x>",
        ];
        let projected = projection(&paths).project(BODY);
        let full = parse_payload(BODY);
        for text in paths {
            let p = path(text);
            assert_eq!(lookup(&projected, &p), lookup(&full, &p), "{text}");
        }
        assert!(projected.get("skip").is_none(), "{projected}");
        assert_eq!(projected["commits"][0], Value::Null, "a placeholder only");
        assert_eq!(projected["commits"][1], json!({"m": "b"}));
    }

    #[test]
    fn a_whole_subtree_is_kept_when_its_path_ends_there() {
        let projected = projection(&[
            "<+trigger.payload.commits>",
            "<+trigger.payload.commits[0].m>",
        ])
        .project(BODY);
        assert_eq!(projected["commits"], parse_payload(BODY)["commits"]);
        assert_eq!(
            projection(&["<+trigger.payload>"]).project(BODY),
            parse_payload(BODY)
        );
    }

    #[test]
    fn non_json_and_malformed_bodies_are_the_raw_string_as_in_a_full_parse() {
        let p = projection(&["<+trigger.payload.a>"]);
        for body in [
            "plain text",
            "42",
            "{\"a\": 1",
            "{\"a\": 1} trailing",
            "[1, 2",
        ] {
            assert_eq!(p.project(body), parse_payload(body), "{body}");
        }
        let body = r#"[{"a":1},{"a":2}]"#;
        let p = projection(&["<+trigger.payload[1].a>"]);
        assert_eq!(
            lookup(&p.project(body), &path("<+trigger.payload[1].a>")),
            Some(&json!(2))
        );
    }

    #[test]
    fn nothing_referenced_reads_nothing() {
        assert!(Projection::default().is_empty());
        assert_eq!(Projection::default().project(BODY), Value::Null);
    }

    /// Every path agrees between the projection and a full parse of `body`.
    fn assert_lookups_agree(paths: &[&str], body: &str) {
        let projected = projection(paths).project(body);
        let full = parse_payload(body);
        for text in paths {
            let p = path(text);
            assert_eq!(
                lookup(&projected, &p),
                lookup(&full, &p),
                "{text} on {body}"
            );
        }
    }

    #[test]
    fn a_key_and_an_index_naming_the_same_element_both_survive() {
        // `a.0` and `a[0]` are the same element of an array; only the first child was kept.
        assert_lookups_agree(
            &["<+trigger.payload.a.0.x>", "<+trigger.payload.a[0].y>"],
            r#"{"a":[{"x":1,"y":2}]}"#,
        );
        assert_lookups_agree(
            &["<+trigger.payload.a[0].y>", "<+trigger.payload.a.0>"],
            r#"{"a":[{"x":1,"y":2}]}"#,
        );
    }

    #[test]
    fn a_skipped_lone_surrogate_makes_the_body_raw_text_as_in_a_full_parse() {
        // A full parse refuses a lone surrogate; IgnoredAny does not check \u escapes.
        assert_lookups_agree(&["<+trigger.payload.a>"], r#"{"skip":"\ud800","a":1}"#);
    }

    #[test]
    fn a_skipped_out_of_range_number_makes_the_body_raw_text_as_in_a_full_parse() {
        assert_lookups_agree(&["<+trigger.payload.a>"], r#"{"skip":1e400,"a":1}"#);
    }

    #[test]
    fn a_skipped_value_at_the_nesting_limit_makes_the_body_raw_text_as_in_a_full_parse() {
        // 128 levels pass check_body, but serde_json's recursion limit refuses them; IgnoredAny
        // skips iteratively with no limit.
        let body = format!(r#"{{"skip":{}{},"a":1}}"#, "[".repeat(127), "]".repeat(127));
        assert!(crate::domain::payload::check_body(body.as_bytes()).is_ok());
        assert_lookups_agree(&["<+trigger.payload.a>"], &body);
    }

    #[test]
    fn duplicate_keys_control_characters_and_extreme_numbers_agree_with_a_full_parse() {
        assert_lookups_agree(
            &["<+trigger.payload.a.b>", "<+trigger.payload.a.c>"],
            r#"{"a":{"b":1},"a":{"c":2}}"#,
        );
        assert_lookups_agree(&["<+trigger.payload.a[1]>"], r#"{"a":[1,2],"a":[3]}"#);
        assert_lookups_agree(&["<+trigger.payload.a>"], "{\"skip\":\"a\u{1}b\",\"a\":1}");
        assert_lookups_agree(
            &[
                "<+trigger.payload.a.x>",
                "<+trigger.payload.b>",
                "<+trigger.payload.c>",
            ],
            r#"{"a":{"x":18446744073709551615,"y":1},"b":-9223372036854775808,"c":1.00000000000000000001}"#,
        );
    }

    mod differential {
        use super::*;
        use proptest::prelude::*;

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                "[a-c0-1]{0,2}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::vec(("[ab01]|00", inner), 0..4)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(".a".to_owned()),
                Just(".b".to_owned()),
                Just(".0".to_owned()),
                Just(".00".to_owned()),
                Just("[0]".to_owned()),
                Just("[1]".to_owned()),
            ]
        }

        fn payload_path() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 0..4)
                .prop_map(|s| format!("<+trigger.payload{}>", s.concat()))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
            #[test]
            fn projected_lookups_equal_full_parse_lookups(
                value in json(),
                paths in prop::collection::vec(payload_path(), 1..5),
            ) {
                let body = value.to_string();
                let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                let projected = projection(&refs).project(&body);
                let full = parse_payload(&body);
                for text in &refs {
                    let p = path(text);
                    prop_assert_eq!(lookup(&projected, &p), lookup(&full, &p), "{} on {}", text, body);
                }
            }
        }
    }
}
